#include "stack_env.h"

#include "rootstream_db.h"

#include <nlohmann/json.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

namespace rsdb_test {

namespace {

const char* const kHowToRun =
    "these tests need the private PostgreSQL/Redis stack; run them through "
    "`scripts/stack.sh run -- ctest --output-on-failure` (from the build directory) or "
    "`scripts/test.sh`";

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr ? std::string(v) : std::string();
}

int port_of(const std::string& url) {
    // scheme://[user@]host:port/...
    auto scheme = url.find("://");
    if (scheme == std::string::npos) return 0;
    auto start = scheme + 3;
    auto end = url.find_first_of("/?", start);
    std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
    auto at = authority.rfind('@');
    if (at != std::string::npos) authority = authority.substr(at + 1);
    auto colon = authority.rfind(':');
    if (colon == std::string::npos) return 0;
    return std::atoi(authority.c_str() + colon + 1);
}

// Runs a program with stdin/stdout/stderr on /dev/null and no other inherited descriptor (a
// daemon must not keep ctest's output pipe open); returns its exit status, or -1.
int run_program(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        // Only async-signal-safe calls between fork and exec: the parent is multithreaded.
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        close_range(3, ~0U, 0);
        if (chdir("/") != 0) _exit(126);
        execv(argv[0], argv.data());
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string find_program(const char* name) {
    std::string path = env_or_empty("PATH");
    if (path.empty()) path = "/usr/bin:/bin";
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        if (dir.empty()) continue;
        std::string candidate = dir + "/" + name;
        if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return std::string("/usr/bin/") + name;
}


bool process_alive(long pid) {
    if (pid <= 0) return false;
    if (kill(static_cast<pid_t>(pid), 0) != 0) return errno == EPERM;
    // A zombie has exited; it only waits for its parent.
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    auto paren = line.rfind(')');
    return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

// Opens the stack's admin database through the library itself and passes it to `fn`.
::testing::AssertionResult with_admin(const Stack& stack,
                                      const std::function<::testing::AssertionResult(rsdb_db*)>& fn) {
    rsdb_config* cfg = nullptr;
    if (rsdb_config_new(&cfg) != RSDB_OK) return ::testing::AssertionFailure() << "rsdb_config_new: " << last_error();
    rsdb_db* db = nullptr;
    int rc = rsdb_config_set(cfg, "database_url", stack.database_url.c_str());
    if (rc == RSDB_OK) rc = rsdb_config_set(cfg, "pool_size", "1");
    if (rc == RSDB_OK) rc = rsdb_db_open(cfg, &db);
    const std::string error = rc == RSDB_OK ? std::string() : last_error();
    rsdb_config_free(cfg);
    if (rc != RSDB_OK) return ::testing::AssertionFailure() << "opening the admin database: " << error;
    auto result = fn(db);
    rsdb_db_close(db);
    return result;
}

::testing::AssertionResult execute(rsdb_db* db, const std::string& sql) {
    if (rsdb_db_execute(db, sql.c_str(), nullptr, nullptr) != RSDB_OK) {
        return ::testing::AssertionFailure() << sql << ": " << last_error();
    }
    return ::testing::AssertionSuccess();
}

// The pid in a name made by StackTest (gt_<pid>_<counter>_<8 hex digits>), or 0 when `name`
// is not exactly of that form, so only such names are ever spliced into DDL.
long pid_of_test_database(const std::string& name) {
    static const std::regex form("gt_([0-9]{1,10})_[0-9]{1,10}_[0-9a-f]{8}");
    std::smatch m;
    if (!std::regex_match(name, m, form)) return 0;
    return std::stol(m[1].str());
}

// Databases of test processes that died before their TearDown (a crash inside a death test's
// child is the usual case) would otherwise stay until the stack is thrown away.
::testing::AssertionResult drop_orphaned_databases(rsdb_db* db) {
    char* rows = nullptr;
    if (rsdb_db_query(db, "SELECT datname FROM pg_database WHERE datname LIKE 'gt\\_%'", nullptr, &rows) != RSDB_OK) {
        return ::testing::AssertionFailure() << "listing test databases: " << last_error();
    }
    std::string text = rows;
    rsdb_string_free(rows);
    auto result = ::testing::AssertionSuccess();
    for (const auto& row : nlohmann::json::parse(text)) {
        const std::string name = row.at("datname").get<std::string>();
        const long pid = pid_of_test_database(name);
        if (pid > 0 && !process_alive(pid)) {
            auto dropped = execute(db, "DROP DATABASE IF EXISTS \"" + name + "\" WITH (FORCE)");
            if (!dropped) result = dropped;
        }
    }
    return result;
}

}  // namespace

std::optional<Stack> read_stack(std::string* why) {
    Stack s;
    s.database_url = env_or_empty("ROOTSTREAM_DATABASE_URL");
    s.redis_url = env_or_empty("ROOTSTREAM_REDIS_URL");
    std::string missing;
    if (s.database_url.empty()) missing += " ROOTSTREAM_DATABASE_URL";
    if (s.redis_url.empty()) missing += " ROOTSTREAM_REDIS_URL";
    if (!missing.empty()) {
        if (why != nullptr) *why = "not set:" + missing + "; " + kHowToRun;
        return std::nullopt;
    }
    s.stack_dir = env_or_empty("ROOTSTREAM_STACK_DIR");
    std::string host = env_or_empty("ROOTSTREAM_PG_HOST");
    if (!host.empty()) s.host = host;
    std::string pg_port = env_or_empty("ROOTSTREAM_PG_PORT");
    s.pg_port = pg_port.empty() ? port_of(s.database_url) : std::atoi(pg_port.c_str());
    std::string redis_port = env_or_empty("ROOTSTREAM_REDIS_PORT");
    s.redis_port = redis_port.empty() ? port_of(s.redis_url) : std::atoi(redis_port.c_str());
    return s;
}

std::string unique_suffix() {
    static std::atomic<unsigned> counter{0};
    static const unsigned salt = [] {
        std::random_device rd;
        return static_cast<unsigned>(rd());
    }();
    thread_local std::mt19937 rng(salt ^ static_cast<unsigned>(std::hash<std::thread::id>()(std::this_thread::get_id())));
    char buf[64];
    std::snprintf(buf, sizeof buf, "%ld_%u_%08x", static_cast<long>(getpid()), counter.fetch_add(1) + 1,
                  static_cast<unsigned>(rng()));
    return buf;
}

std::string with_database(const std::string& url, const std::string& database) {
    auto scheme = url.find("://");
    auto start = scheme == std::string::npos ? 0 : scheme + 3;
    auto path = url.find_first_of("/?", start);
    std::string base = url.substr(0, path);
    std::string query;
    if (path != std::string::npos) {
        auto q = url.find('?', path);
        if (q != std::string::npos) query = url.substr(q);
    }
    return base + "/" + database + query;
}

std::string ha_node_url_other_than(const std::string& nodes, const std::string& node) {
    std::stringstream in(nodes);
    std::string item;
    while (std::getline(in, item, ',')) {
        const auto eq = item.find('=');
        if (eq != std::string::npos && item.substr(0, eq) != node) return item.substr(eq + 1);
    }
    return std::string();
}

int unused_tcp_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    int port = 0;
    socklen_t len = sizeof addr;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    close(fd);
    return port;
}

bool wait_for(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
              std::chrono::milliseconds poll) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        if (condition()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return condition();
        std::this_thread::sleep_for(poll);
    }
}

bool redis_answers_ping(const std::string& host, int port, std::chrono::milliseconds timeout) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    bool ok = inet_pton(AF_INET, host.c_str(), &addr.sin_addr) == 1 &&
              connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    if (ok) {
        const char ping[] = "PING\r\n";
        ok = send(fd, ping, sizeof ping - 1, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof ping - 1);
    }
    std::string reply;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (ok && reply.find("\r\n") == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
        char buf[64];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    return reply.rfind("+PONG\r\n", 0) == 0;
}

namespace {

::testing::AssertionResult run_stack_step(const Stack& stack, const char* step) {
    if (stack.stack_dir.empty() || stack.redis_port <= 0) {
        return ::testing::AssertionFailure()
               << "ROOTSTREAM_STACK_DIR and ROOTSTREAM_REDIS_PORT are needed to stop or start Redis; " << kHowToRun;
    }
    // The stack script owns how its Redis is started; it restarts it on the same port.
    const std::string script = std::string(RSDB_SOURCE_DIR) + "/scripts/stack.sh";
    int rc = run_program({find_program("bash"), script, step, stack.stack_dir});
    if (rc != 0) return ::testing::AssertionFailure() << "stack.sh " << step << " exited with status " << rc;
    return ::testing::AssertionSuccess();
}

}  // namespace

::testing::AssertionResult stop_influx(const Stack& stack) {
    if (stack.stack_dir.empty()) return ::testing::AssertionFailure() << "ROOTSTREAM_STACK_DIR is not set; " << kHowToRun;
    const std::string script = std::string(RSDB_SOURCE_DIR) + "/scripts/stack.sh";
    int rc = run_program({find_program("bash"), script, "influx-stop", stack.stack_dir});
    if (rc != 0) return ::testing::AssertionFailure() << "stack.sh influx-stop exited with status " << rc;
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult start_influx(const Stack& stack) {
    if (stack.stack_dir.empty()) return ::testing::AssertionFailure() << "ROOTSTREAM_STACK_DIR is not set; " << kHowToRun;
    const std::string script = std::string(RSDB_SOURCE_DIR) + "/scripts/stack.sh";
    int rc = run_program({find_program("bash"), script, "influx-start", stack.stack_dir});
    if (rc != 0) return ::testing::AssertionFailure() << "stack.sh influx-start exited with status " << rc;
    const int port = port_of(env_or_empty("ROOTSTREAM_INFLUX_URL"));
    if (!wait_for([&] { return http_get(port, "/ping").first == 204; }, std::chrono::seconds(30))) {
        return ::testing::AssertionFailure() << "InfluxDB did not answer /ping after influx-start";
    }
    return ::testing::AssertionSuccess();
}

std::string env_value(const char* name) { return env_or_empty(name); }

int url_port(const std::string& url) { return port_of(url); }

std::pair<int, std::string> http_get(int port, const std::string& path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return {0, ""};
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        close(fd);
        return {0, ""};
    }
    const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        close(fd);
        return {0, ""};
    }
    std::string resp;
    char buf[8192];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        resp.append(buf, static_cast<size_t>(n));
    }
    close(fd);
    // "HTTP/1.x NNN ..."
    if (resp.size() < 12 || resp.compare(0, 5, "HTTP/") != 0) return {0, resp};
    const int status = std::atoi(resp.c_str() + resp.find(' ') + 1);
    const auto body_at = resp.find("\r\n\r\n");
    return {status, body_at == std::string::npos ? std::string() : resp.substr(body_at + 4)};
}

bool on_path(const std::string& name) {
    std::string path = env_or_empty("PATH");
    std::stringstream ss(path);
    std::string dir;
    while (std::getline(ss, dir, ':')) {
        if (!dir.empty() && access((dir + "/" + name).c_str(), X_OK) == 0) return true;
    }
    return false;
}

int run_with_stdin(const std::vector<std::string>& args, const std::string& stdin_file, std::string* output) {
    char out_tmpl[] = "/tmp/rsdb-gt-out-XXXXXX";
    int out_fd = mkstemp(out_tmpl);
    if (out_fd < 0) return -1;
    std::vector<std::string> full = args;
    full[0] = find_program(args[0].c_str());
    std::vector<char*> argv;
    for (const auto& a : full) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = fork();
    if (pid < 0) {
        close(out_fd);
        unlink(out_tmpl);
        return -1;
    }
    if (pid == 0) {
        int in = open(stdin_file.empty() ? "/dev/null" : stdin_file.c_str(), O_RDONLY);
        if (in >= 0) dup2(in, 0);
        dup2(out_fd, 1);
        dup2(out_fd, 2);
        close_range(3, ~0U, 0);
        execv(argv[0], argv.data());
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) break;
    }
    close(out_fd);
    if (output != nullptr) {
        std::ifstream f(out_tmpl);
        std::stringstream ss;
        ss << f.rdbuf();
        *output = ss.str();
    }
    unlink(out_tmpl);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

::testing::AssertionResult ha_step(const Stack& stack, const std::string& step, const std::string& arg) {
    if (stack.stack_dir.empty()) {
        return ::testing::AssertionFailure() << "ROOTSTREAM_STACK_DIR is needed for stack.sh " << step << "; "
                                             << kHowToRun;
    }
    const std::string script = std::string(RSDB_SOURCE_DIR) + "/scripts/stack.sh";
    int rc = run_program({find_program("bash"), script, step, stack.stack_dir, arg});
    if (rc != 0) return ::testing::AssertionFailure() << "stack.sh " << step << " " << arg << " exited with " << rc;
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult stop_redis(const Stack& stack) {
    auto stopped = run_stack_step(stack, "redis-stop");
    if (!stopped) return stopped;
    if (redis_answers_ping(stack.host, stack.redis_port, std::chrono::milliseconds(200))) {
        return ::testing::AssertionFailure() << "something still answers PING on port " << stack.redis_port
                                             << " after stack.sh redis-stop";
    }
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult start_redis(const Stack& stack) {
    auto started = run_stack_step(stack, "redis-start");
    if (!started) return started;
    if (!redis_answers_ping(stack.host, stack.redis_port)) {
        return ::testing::AssertionFailure() << "redis-server did not answer PING on port " << stack.redis_port
                                             << " after the start (see " << stack.stack_dir << "/redis.log)";
    }
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult restart_redis(const Stack& stack) {
    auto stopped = run_stack_step(stack, "redis-stop");
    if (!stopped) return stopped;
    return start_redis(stack);
}

ScopedRedisOutage::ScopedRedisOutage(const Stack& stack) : stack_(stack), stopped_(stop_redis(stack)) {
    // Even a failed stop may have taken the server down half-way: the destructor starts it then too.
    down_ = true;
}

ScopedRedisOutage::~ScopedRedisOutage() {
    if (down_) {
        EXPECT_TRUE(restart()) << "the stack's Redis could not be started again";
    }
}

::testing::AssertionResult ScopedRedisOutage::restart() {
    if (!down_) return ::testing::AssertionSuccess();
    down_ = false;
    if (redis_answers_ping(stack_.host, stack_.redis_port, std::chrono::milliseconds(200))) {
        return ::testing::AssertionSuccess();  // the stop never happened
    }
    return start_redis(stack_);
}

std::string last_error() {
    const char* e = rsdb_last_error();
    return e != nullptr ? std::string(e) : std::string("<no error>");
}

ScopedEnv::ScopedEnv(std::string name, const std::string& value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) previous_ = old;
    setenv(name_.c_str(), value.c_str(), 1);
}

ScopedEnv::~ScopedEnv() {
    if (previous_) {
        setenv(name_.c_str(), previous_->c_str(), 1);
    } else {
        unsetenv(name_.c_str());
    }
}

void StackTest::SetUp() {
    std::string why;
    auto stack = read_stack(&why);
    if (!stack) FAIL() << why;
    stack_ = *stack;
    const std::string suffix = unique_suffix();
    db_name_ = "gt_" + suffix;
    db_url_ = with_database(stack_.database_url, db_name_);
    prefix_ = "gt:" + suffix + ":";
    // The name is made here from digits and hex only, so splicing it into DDL is safe.
    ASSERT_TRUE(with_admin(stack_, [&](rsdb_db* db) { return execute(db, "CREATE DATABASE \"" + db_name_ + "\""); }));
    created_ = true;
}

void StackTest::TearDown() {
    if (created_) {
        EXPECT_TRUE(with_admin(stack_, [&](rsdb_db* db) {
            // FORCE: a test that failed half-way may still hold connections to its database.
            auto dropped = execute(db, "DROP DATABASE IF EXISTS \"" + db_name_ + "\" WITH (FORCE)");
            auto swept = drop_orphaned_databases(db);
            return dropped ? swept : dropped;
        }));
        created_ = false;
    }
}

}  // namespace rsdb_test
