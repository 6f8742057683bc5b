// Test support shared by the C and C++ suites: access to the private server stack started by
// scripts/stack.sh, a fresh PostgreSQL database per test, unique Redis key prefixes and a
// helper that restarts the stack's Redis server.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace rsdb_test {

/// The variables exported by `scripts/stack.sh run`.
struct Stack {
    std::string database_url;  // superuser URL of the `postgres` database
    std::string redis_url;
    std::string stack_dir;
    std::string host = "127.0.0.1";
    int pg_port = 0;
    int redis_port = 0;
};

/// Reads the stack variables. Returns nullopt and sets `*why` when the tests do not run inside
/// a stack; `*why` then says how to run them.
std::optional<Stack> read_stack(std::string* why);

/// `<pid>_<counter>_<random hex>`: unique within the stack, safe inside identifiers.
std::string unique_suffix();

/// `url` with its path replaced by `/<database>` (query string kept).
std::string with_database(const std::string& url, const std::string& database);

/// A TCP port on 127.0.0.1 that nothing listens on (bound to port 0, then released).
int unused_tcp_port();

/// The URL of a node of a `--pg-ha` stack's ROOTSTREAM_HA_PG_NODES ("p1=url,p2=url,...")
/// other than the node named `node`; empty when there is none.
std::string ha_node_url_other_than(const std::string& nodes, const std::string& node);

/// Polls `condition` until it holds or `timeout` passes; returns its last value.
bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
              std::chrono::milliseconds poll = std::chrono::milliseconds(20));

/// True when a server on host:port answers PING with PONG within `timeout`.
bool redis_answers_ping(const std::string& host, int port,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(500));

/// Shuts the stack's Redis server down (`redis-cli shutdown nosave`), waits until its process
/// is gone, and starts it again with the arguments scripts/stack.sh uses, on the same port and
/// with the same pidfile, so the stack still stops it at the end.
::testing::AssertionResult restart_redis(const Stack& stack);

/// The two halves of restart_redis: `stop_redis` shuts the stack's Redis server down
/// (`scripts/stack.sh redis-stop`) and checks that nothing answers on its port any more;
/// `start_redis` starts it again on the same port and waits until it answers PING.
::testing::AssertionResult stop_redis(const Stack& stack);
::testing::AssertionResult start_redis(const Stack& stack);

/// `scripts/stack.sh influx-stop` / `influx-start` on the stack's InfluxDB (started again on the
/// same port; `start_influx` returns once it answers).
::testing::AssertionResult stop_influx(const Stack& stack);
::testing::AssertionResult start_influx(const Stack& stack);

/// The value of an environment variable, or "" when it is unset.
std::string env_value(const char* name);

/// A plain HTTP/1.0 GET of `path` on 127.0.0.1:`port`: the status code and the body (status 0
/// when nothing answers).
std::pair<int, std::string> http_get(int port, const std::string& path);

/// The port of an `http://host:port...` URL (0 when there is none).
int url_port(const std::string& url);

/// Whether `name` is an executable on PATH.
bool on_path(const std::string& name);

/// Runs `argv` (argv[0] looked up on PATH) with stdin from `stdin_file` (may be empty) and
/// returns its exit status; its output goes to `*output` when given.
int run_with_stdin(const std::vector<std::string>& argv, const std::string& stdin_file, std::string* output);
/// `scripts/stack.sh STEP DIR ARG` for the Sentinel setup of a `--sentinel` stack: `ha-kill`
/// (master, replica, r1, r2, s1..s3), `ha-start` (r1, r2, s1..s3), `ha-wait` (seconds).
::testing::AssertionResult ha_step(const Stack& stack, const std::string& step, const std::string& arg);

/// Stops the stack's Redis for the lifetime of the object; the destructor starts it again (if
/// `restart()` has not already done so), so a failing test never leaves the stack without Redis.
class ScopedRedisOutage {
public:
    explicit ScopedRedisOutage(const Stack& stack);
    ~ScopedRedisOutage();
    ScopedRedisOutage(const ScopedRedisOutage&) = delete;
    ScopedRedisOutage& operator=(const ScopedRedisOutage&) = delete;

    /// Whether the server was stopped (and why not, when it was not).
    const ::testing::AssertionResult& stopped() const { return stopped_; }
    /// Starts the server again now.
    ::testing::AssertionResult restart();

private:
    Stack stack_;
    ::testing::AssertionResult stopped_;
    bool down_ = false;
};

/// rsdb_last_error() as a string ("<no error>" when it is NULL), for failure messages.
std::string last_error();

/// Sets an environment variable for the lifetime of the object, then restores it.
class ScopedEnv {
public:
    ScopedEnv(std::string name, const std::string& value);
    ~ScopedEnv();
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

private:
    std::string name_;
    std::optional<std::string> previous_;
};

/// Base fixture: every test gets its own empty database (created through the C API on the
/// admin connection, dropped WITH (FORCE) in TearDown) and its own Redis key prefix. Missing
/// stack variables make SetUp fail, so a run outside the stack can never pass by skipping.
class StackTest : public ::testing::Test {
protected:
    void SetUp() override;
    void TearDown() override;

    const Stack& stack() const { return stack_; }
    /// Name of this test's database.
    const std::string& db_name() const { return db_name_; }
    /// URL of this test's database.
    const std::string& db_url() const { return db_url_; }
    const std::string& redis_url() const { return stack_.redis_url; }
    /// Prefix unique to this test, for Redis keys and channels.
    const std::string& prefix() const { return prefix_; }
    /// `name` under this test's prefix.
    std::string key(const std::string& name) const { return prefix_ + name; }

private:
    Stack stack_;
    std::string db_name_;
    std::string db_url_;
    std::string prefix_;
    bool created_ = false;
};

}  // namespace rsdb_test
