//! The process-wide tokio runtime that the blocking C and C++ APIs run core futures on.

use once_cell::sync::OnceCell;
use std::future::Future;
use tokio::runtime::Runtime;

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// The shared runtime, created on first use with two worker threads named `rsdb-worker`.
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rsdb-worker")
            .enable_all()
            .build()
            .expect("the tokio runtime could not be created")
    })
}

/// Runs a future to completion from synchronous code. When called from inside a runtime
/// worker (for instance from a callback), it moves the wait off the worker so it cannot
/// deadlock the runtime.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(fut))
        }
        Ok(_) => std::thread::scope(|s| s.spawn(|| runtime().block_on(fut)).join().expect("blocking thread panicked")),
        Err(_) => runtime().block_on(fut),
    }
}
