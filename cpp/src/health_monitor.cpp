#include "rootstream/database/health_monitor.h"

#include "access.h"
#include "internal.h"
#include "message_observer.h"
#include "rootstream-db/src/ffi/cxx/health.rs.h"

namespace rootstream {
namespace database {

struct HealthMonitor::Impl {
    rust::Box<ffi::HealthBox> box;
};

namespace {
std::string options_text(const nlohmann::json& options) {
    if (options.is_null()) return "{}";
    if (!options.is_object()) Error::raise(RSDB_ERR_JSON, "health options must be a JSON object");
    return detail::dump_json(options);
}

std::optional<double> number(const nlohmann::json& j, const char* key) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}
}  // namespace

HealthMonitor::HealthMonitor(DatabaseManager& db, const nlohmann::json& options) {
    const auto text = options_text(options);
    impl_ = std::make_unique<Impl>(
        Impl{detail::call([&] { return ffi::health_open(detail::Access::db(db), text); })});
}
HealthMonitor::HealthMonitor(HealthMonitor&&) noexcept = default;
HealthMonitor& HealthMonitor::operator=(HealthMonitor&&) noexcept = default;
HealthMonitor::~HealthMonitor() {
    if (impl_) {
        try {
            impl_->box->health_close();
        } catch (...) {
            // A destructor must not throw; the thread ends after its handler returns.
        }
    }
}

void HealthMonitor::start() {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from health monitor");
    detail::call([&] { impl_->box->health_start(); });
}

void HealthMonitor::stop() {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from health monitor");
    detail::call([&] { impl_->box->health_stop(); });
}

bool HealthMonitor::running() const { return impl_ && impl_->box->health_running(); }

nlohmann::json HealthMonitor::check_now() {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from health monitor");
    return detail::parse_json(detail::call([&] { return impl_->box->health_check_now(); }));
}

nlohmann::json HealthMonitor::status() const {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from health monitor");
    return detail::parse_json(impl_->box->health_status());
}

void HealthMonitor::on_alert(AlertHandler handler) {
    if (!impl_) Error::raise(RSDB_ERR_STATE, "moved-from health monitor");
    if (!handler) Error::raise(RSDB_ERR_NULL, "the alert handler must not be empty");
    auto observer = std::make_unique<ffi::MessageObserver>(
        [handler = std::move(handler)](const std::string&, const std::string& payload) {
            HealthAlert a;
            a.json = nlohmann::json::parse(payload);
            a.check = a.json.value("check", "");
            a.severity = a.json.value("severity", "");
            a.state = a.json.value("state", "");
            a.resolved = a.json.value("resolved", false);
            a.repeat = a.json.value("repeat", false);
            a.message = a.json.value("message", "");
            a.value = number(a.json, "value");
            a.threshold = number(a.json, "threshold");
            a.at = a.json.value("at", "");
            a.since = a.json.value("since", "");
            handler(a);
        });
    detail::call([&] { impl_->box->health_on_alert(std::move(observer)); });
}

void HealthMonitor::close() {
    if (!impl_) return;
    detail::call([&] { impl_->box->health_close(); });
}

}  // namespace database
}  // namespace rootstream
