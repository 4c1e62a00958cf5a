#include "tollgate/k8s/watcher.h"

#include <simdjson.h>

#include <algorithm>
#include <random>

#include "tollgate/util/log.h"
#include "tollgate/util/simdjson_helpers.h"

namespace tollgate::k8s {

namespace od = simdjson::ondemand;

namespace {

std::string url_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string shorten(std::string_view s, std::size_t n = 200) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

// The message of a Kubernetes Status body, or the start of the body.
std::string status_message(const std::string& body) {
  od::parser parser;
  std::string buf;
  try {
    od::document doc = parser.iterate(util::pad(buf, body));
    std::string_view msg;
    if (!doc["message"].get_string().get(msg)) return std::string(msg);
  } catch (const simdjson::simdjson_error&) {
  }
  return shorten(body);
}

// metadata.resourceVersion and, for a Status, its code; from an object's JSON text inside a
// buffer with padding after it.
struct ObjectFacts {
  std::string_view rv;
  std::int64_t code = 0;
  std::string_view message;
};

simdjson::error_code object_facts(od::parser& parser, std::string_view object, std::size_t capacity,
                                  ObjectFacts& out) {
  od::document doc;
  if (auto err =
          parser.iterate(simdjson::padded_string_view(object.data(), object.size(), capacity))
              .get(doc)) {
    return err;
  }
  od::object obj;
  if (auto err = doc.get_object().get(obj)) return err;
  for (auto field : obj) {
    std::string_view key;
    if (auto err = field.unescaped_key().get(key)) return err;
    if (key == "metadata") {
      od::object meta;
      if (auto err = field.value().get_object().get(meta)) return err;
      for (auto m : meta) {
        std::string_view mk;
        if (auto err = m.unescaped_key().get(mk)) return err;
        if (mk == "resourceVersion") {
          if (auto err = m.value().get_string().get(out.rv)) return err;
        }
      }
    } else if (key == "code") {
      if (auto err = field.value().get_int64().get(out.code)) return err;
    } else if (key == "message") {
      if (auto err = field.value().get_string().get(out.message)) return err;
    }
  }
  return simdjson::SUCCESS;
}

}  // namespace

Watcher::Watcher(WatcherOptions options, std::unique_ptr<Transport> transport,
                 WatchHandler& handler)
    : options_(std::move(options)), transport_(std::move(transport)), handler_(handler) {}

std::string Watcher::path() const {
  std::lock_guard lock(mu_);
  return options_.paths.empty() ? std::string() : options_.paths[path_index_];
}

std::string Watcher::resource_version() const {
  std::lock_guard lock(mu_);
  return rv_;
}

void Watcher::set_rv(std::string_view rv) {
  if (rv.empty()) return;
  std::lock_guard lock(mu_);
  rv_.assign(rv);
}

void Watcher::stop() {
  stopped_ = true;
  transport_->cancel();
  std::lock_guard lock(mu_);
  wake_.notify_all();
}

void Watcher::sleep_for(std::chrono::duration<double> d) {
  std::unique_lock lock(mu_);
  wake_.wait_for(lock, d, [&] { return stopped_.load(); });
}

void Watcher::run() {
  bool need_list = true;
  bool first = true;
  int failures = 0;
  bool healthy = false;
  auto report = [&](bool ok, const std::string& msg) {
    if (ok == healthy && !first) return;
    healthy = ok;
    handler_.health(ok, msg);
  };
  while (!stopped_) {
    const Outcome o = need_list ? list() : watch();
    if (stopped_) break;
    switch (o) {
      case Outcome::kOk:
        failures = 0;
        options_.backoff.reset();
        if (need_list) {
          need_list = false;
          first = false;
        }
        report(true, "watching");
        break;
      case Outcome::kRelist:
        need_list = true;
        if (!first) stats_.relists++;
        break;
      case Outcome::kRetry:
        sleep_for(retry_after_);
        break;
      case Outcome::kBackoff: {
        // A watch that drops is resumed at once; repeated failures back off.
        if (progress_) failures = 0;
        progress_ = false;
        if (!need_list && failures++ == 0) break;
        const auto d = options_.backoff.next();
        report(false, "failing; retrying in " + std::to_string(d.count()) + " s");
        sleep_for(d);
        break;
      }
      case Outcome::kStopped:
        return;
    }
  }
}

Watcher::Outcome Watcher::classify(const HttpResponse& r, const std::string& what) {
  stats_.errors++;
  const std::string msg = status_message(r.body);
  const std::string code = std::to_string(r.status);
  if (r.status == 401 || r.status == 403) {
    util::log_error(r.status == 401 ? "the API server rejected our credentials (401 Unauthorized)"
                                    : "not allowed by the API server's RBAC (403 Forbidden)",
                    {{"kind", options_.kind}, {"request", what}, {"message", msg}});
    return Outcome::kBackoff;
  }
  if (r.status == 429) {
    double secs = 1;
    try {
      if (!r.header("retry-after").empty()) secs = std::stod(r.header("retry-after"));
    } catch (const std::exception&) {
    }
    retry_after_ = std::chrono::duration<double>(std::clamp(secs, 0.0, 60.0));
    util::log_warn("throttled by the API server (429); waiting as Retry-After asks",
                   {{"kind", options_.kind}, {"seconds", std::to_string(secs)}});
    return Outcome::kRetry;
  }
  util::log_warn("API server error",
                 {{"kind", options_.kind}, {"request", what}, {"status", code}, {"message", msg}});
  return Outcome::kBackoff;
}

Watcher::Outcome Watcher::list() {
  std::string cont;
  std::string list_rv;
  std::string padded;
  od::parser parser;
  handler_.list_begin();
  for (;;) {
    if (stopped_) return Outcome::kStopped;
    const std::string base = path();
    std::string target = base + "?limit=" + std::to_string(options_.page_size);
    if (!cont.empty()) target += "&continue=" + url_encode(cont);
    auto r = transport_->get(target, options_.request_timeout, options_.max_list_page_bytes);
    if (stopped_) return Outcome::kStopped;
    if (!r.ok()) {
      stats_.errors++;
      util::log_warn("list failed", {{"kind", options_.kind}, {"error", r.error().message}});
      return Outcome::kBackoff;
    }
    if (r->status == 404 && cont.empty()) {
      std::lock_guard lock(mu_);
      if (path_index_ + 1 < options_.paths.size()) {
        util::log_info("the API server does not serve this version; trying the next",
                       {{"kind", options_.kind},
                        {"path", options_.paths[path_index_]},
                        {"next", options_.paths[path_index_ + 1]}});
        ++path_index_;
        continue;
      }
    }
    if (r->status == 410 && !cont.empty()) {
      util::log_info("list continuation expired; listing again from the start",
                     {{"kind", options_.kind}});
      stats_.expired++;
      cont.clear();
      handler_.list_begin();
      continue;
    }
    if (r->status != 200) return classify(*r, "GET " + target);
    stats_.list_bytes += r->body.size();
    // Items go to the handler as they are parsed; the page's metadata comes first or last.
    std::string next_cont;
    auto parse = [&]() -> simdjson::error_code {
      od::document doc;
      if (auto err = parser.iterate(util::pad(padded, r->body)).get(doc)) return err;
      od::object top;
      if (auto err = doc.get_object().get(top)) return err;
      for (auto field : top) {
        std::string_view key;
        if (auto err = field.unescaped_key().get(key)) return err;
        if (key == "metadata") {
          od::object meta;
          if (auto err = field.value().get_object().get(meta)) return err;
          for (auto m : meta) {
            std::string_view mk;
            if (auto err = m.unescaped_key().get(mk)) return err;
            std::string_view v;
            if (mk == "resourceVersion") {
              if (auto err = m.value().get_string().get(v)) return err;
              list_rv.assign(v);
            } else if (mk == "continue") {
              if (auto err = m.value().get_string().get(v)) return err;
              next_cont.assign(v);
            }
          }
        } else if (key == "items") {
          od::value items_value;
          if (auto err = field.value().get(items_value)) return err;
          if (items_value.is_null()) continue;
          od::array items;
          if (auto err = items_value.get_array().get(items)) return err;
          for (auto item : items) {
            od::object o;
            if (auto err = item.get_object().get(o)) return err;
            std::string_view raw;
            if (auto err = o.raw_json().get(raw)) return err;
            handler_.list_item(raw);
          }
        }
      }
      return simdjson::SUCCESS;
    };
    const simdjson::error_code err = util::guarded(parse);
    if (err) {
      stats_.errors++;
      util::log_warn("list response is not a valid list",
                     {{"kind", options_.kind}, {"error", simdjson::error_message(err)}});
      return Outcome::kBackoff;
    }
    cont = std::move(next_cont);
    if (cont.empty()) break;
  }
  handler_.list_end();
  set_rv(list_rv);
  stats_.lists++;
  return Outcome::kOk;
}

Watcher::Outcome Watcher::watch() {
  thread_local std::mt19937 rng{std::random_device{}()};
  const int min = std::max(1, options_.min_timeout_seconds);
  const int timeout = min + static_cast<int>(rng() % static_cast<unsigned>(min));
  const std::string target = path() + "?watch=1&resourceVersion=" + url_encode(resource_version()) +
                             "&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout);
  bool expired = false;
  bool error_event = false;
  std::string padded;
  od::parser parser;
  od::parser object_parser;
  progress_ = false;
  auto on_line = [&](std::string_view line) -> bool {
    progress_ = true;
    std::string_view type;
    std::string_view object;
    auto parse = [&]() -> simdjson::error_code {
      od::document doc;
      if (auto err = parser.iterate(util::pad(padded, line)).get(doc)) return err;
      od::object top;
      if (auto err = doc.get_object().get(top)) return err;
      for (auto field : top) {
        std::string_view key;
        if (auto err = field.unescaped_key().get(key)) return err;
        if (key == "type") {
          if (auto err = field.value().get_string().get(type)) return err;
        } else if (key == "object") {
          od::object o;
          if (auto err = field.value().get_object().get(o)) return err;
          if (auto err = o.raw_json().get(object)) return err;
        }
      }
      return type.empty() || object.empty() ? simdjson::NO_SUCH_FIELD : simdjson::SUCCESS;
    };
    ObjectFacts facts;
    const simdjson::error_code err = util::guarded([&] {
      auto e = parse();
      if (e) return e;
      // Padding after `object`: the rest of the padded buffer.
      const std::size_t capacity =
          padded.size() - static_cast<std::size_t>(object.data() - padded.data());
      return object_facts(object_parser, object, capacity, facts);
    });
    if (err) {
      stats_.bad_lines++;
      util::log_warn("malformed watch event skipped", {{"kind", options_.kind},
                                                       {"error", simdjson::error_message(err)},
                                                       {"line", shorten(line)}});
      return true;
    }
    if (type == "ADDED" || type == "MODIFIED" || type == "DELETED") {
      handler_.event(type == "ADDED"      ? EventType::kAdded
                     : type == "MODIFIED" ? EventType::kModified
                                          : EventType::kDeleted,
                     object);
      set_rv(facts.rv);
      stats_.events++;
      return true;
    }
    if (type == "BOOKMARK") {
      set_rv(facts.rv);
      stats_.bookmarks++;
      return true;
    }
    if (type == "ERROR") {
      if (facts.code == 410) {
        expired = true;
      } else {
        error_event = true;
        util::log_warn("watch ERROR event", {{"kind", options_.kind},
                                             {"code", std::to_string(facts.code)},
                                             {"message", std::string(facts.message)}});
      }
      return false;
    }
    stats_.bad_lines++;
    util::log_warn("watch event of unknown type skipped",
                   {{"kind", options_.kind}, {"type", std::string(type)}});
    return true;
  };
  auto r = transport_->stream(target, std::chrono::seconds(timeout) + options_.idle_slack,
                              options_.max_event_bytes, on_line);
  if (stopped_) return Outcome::kStopped;
  if (expired) {
    stats_.expired++;
    util::log_info("resourceVersion expired (410); relisting", {{"kind", options_.kind}});
    return Outcome::kRelist;
  }
  if (!r.ok()) {
    stats_.errors++;
    util::log_warn("watch interrupted; resuming from the last version seen",
                   {{"kind", options_.kind}, {"error", r.error().message}});
    return Outcome::kBackoff;
  }
  if (error_event) {
    stats_.errors++;
    return Outcome::kBackoff;
  }
  if (r->status == 410) {
    stats_.expired++;
    return Outcome::kRelist;
  }
  if (r->status != 200) return classify(*r, "watch " + path());
  stats_.watches++;
  return Outcome::kOk;
}

}  // namespace tollgate::k8s
