#include "tollgate/k8s/watcher.h"

#include <simdjson.h>

#include <algorithm>
#include <random>

#include "tollgate/util/log.h"
#include "tollgate/util/simdjson_helpers.h"
#include "tollgate/util/thread_failure.h"

namespace tollgate::k8s {

namespace od = simdjson::ondemand;
using Clock = std::chrono::steady_clock;

const char* state_name(WatcherState s) {
  switch (s) {
    case WatcherState::kEmpty:
      return "empty";
    case WatcherState::kListing:
      return "listing";
    case WatcherState::kStreaming:
      return "streaming";
    case WatcherState::kListed:
      return "listed";
    case WatcherState::kWatching:
      return "watching";
  }
  return "?";
}

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
std::string error_text(const std::string& body) {
  std::string msg = status_message(body);
  return msg.empty() ? shorten(body) : msg;
}

// What one watch line says: its type, its object's text, and what the watcher needs of the
// object (metadata.resourceVersion; a bookmark's initial-events-end annotation; a Status's
// code and message).
struct WatchLine {
  std::string_view type, object, rv, message;
  std::int64_t code = 0;
  bool initial_events_end = false;
};

simdjson::error_code read_annotations(od::value v, bool& end) {
  if (v.is_null()) return simdjson::SUCCESS;
  od::object annotations;
  if (auto err = v.get_object().get(annotations)) return err;
  for (auto a : annotations) {
    std::string_view key;
    if (auto err = a.unescaped_key().get(key)) return err;
    if (key != "k8s.io/initial-events-end") continue;
    std::string_view value;
    if (auto err = a.value().get_string().get(value)) return err;
    end = value == "true";
  }
  return simdjson::SUCCESS;
}

simdjson::error_code read_metadata(od::object meta, WatchLine& out) {
  for (auto m : meta) {
    std::string_view key;
    if (auto err = m.unescaped_key().get(key)) return err;
    if (key == "resourceVersion") {
      if (auto err = m.value().get_string().get(out.rv)) return err;
    } else if (key == "annotations") {
      if (auto err = read_annotations(m.value(), out.initial_events_end)) return err;
    }
  }
  return simdjson::SUCCESS;
}

// The object's facts, from its text inside a buffer with `capacity` readable bytes.
simdjson::error_code read_object(od::parser& parser, std::string_view object, std::size_t capacity,
                                 WatchLine& out) {
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
      if (auto err = read_metadata(meta, out)) return err;
    } else if (key == "code") {
      if (auto err = field.value().get_int64().get(out.code)) return err;
    } else if (key == "message") {
      if (auto err = field.value().get_string().get(out.message)) return err;
    }
  }
  return simdjson::SUCCESS;
}

// Parses one watch line ({"type": ..., "object": {...}}), copied into `padded`. With
// `type_only_added`, an ADDED event's object is not read further (a streaming list's initial
// events: the state's version is the bookmark's).
simdjson::error_code parse_line(od::parser& parser, od::parser& object_parser, std::string& padded,
                                std::string_view line, bool type_only_added, WatchLine& out) {
  return util::guarded([&]() -> simdjson::error_code {
    od::document doc;
    if (auto err = parser.iterate(util::pad(padded, line)).get(doc)) return err;
    od::object top;
    if (auto err = doc.get_object().get(top)) return err;
    for (auto field : top) {
      std::string_view key;
      if (auto err = field.unescaped_key().get(key)) return err;
      if (key == "type") {
        if (auto err = field.value().get_string().get(out.type)) return err;
      } else if (key == "object") {
        od::object o;
        if (auto err = field.value().get_object().get(o)) return err;
        if (auto err = o.raw_json().get(out.object)) return err;
      }
    }
    if (out.type.empty() || out.object.empty()) return simdjson::NO_SUCH_FIELD;
    if (type_only_added && out.type == "ADDED") return simdjson::SUCCESS;
    // Padding after `object`: the rest of the padded buffer.
    const std::size_t capacity =
        padded.size() - static_cast<std::size_t>(out.object.data() - padded.data());
    return read_object(object_parser, out.object, capacity, out);
  });
}

int random_timeout(int min_seconds) {
  thread_local std::mt19937 rng{std::random_device{}()};
  const int min = std::max(1, min_seconds);
  return min + static_cast<int>(rng() % static_cast<unsigned>(min));
}

}  // namespace

// One watch stream: a plain watch, or a streaming list until its initial events end.
struct Watcher::Stream {
  std::string target;
  std::chrono::milliseconds idle{0};  // the stream's idle limit once watching
  bool initial = false;               // receiving a streaming list's initial events
  bool listed = false;                // the streaming list completed (then watched)
  bool expired = false;               // an ERROR event with 410
  bool error_event = false;           // another ERROR event
  Clock::time_point last_data = Clock::now();
  ApiResponse response;  // a non-200 answer (Outcome::kStatus)
  std::string padded;
  od::parser parser, object_parser;
};

struct Watcher::Pager {
  od::parser parser;
  std::string padded;
};

Watcher::Watcher(WatcherOptions options, std::unique_ptr<Transport> transport,
                 WatchHandler& handler)
    : options_(std::move(options)), transport_(std::move(transport)), handler_(handler) {
  streaming_ = options_.streaming_list;
}

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

void Watcher::clear_rv() {
  std::lock_guard lock(mu_);
  rv_.clear();
}

bool Watcher::next_path() {
  std::lock_guard lock(mu_);
  if (path_index_ + 1 >= options_.paths.size()) return false;
  util::log_info("the API server does not serve this version; trying the next",
                 {{"kind", options_.kind},
                  {"path", options_.paths[path_index_]},
                  {"next", options_.paths[path_index_ + 1]}});
  ++path_index_;
  return true;
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

void Watcher::report(bool healthy, const std::string& message) {
  if (reported_ && healthy == healthy_) return;
  reported_ = true;
  healthy_ = healthy;
  handler_.health(healthy, message);
}

void Watcher::run() {
  int failures = 0;
  while (!stopped_) {
    const WatcherState at = state_.load();
    Outcome o = Outcome::kOk;
    if (at == WatcherState::kEmpty) {
      o = streaming_ ? stream_list() : list();
    } else {
      o = watch();
    }
    if (stopped_) break;
    switch (o) {
      case Outcome::kOk:
        failures = 0;
        options_.backoff.reset();
        report(true, "watching");
        break;
      case Outcome::kRelist:  // the next list asks for the newest state
        clear_rv();
        set_state(WatcherState::kEmpty);
        if (stats_.lists > 0) stats_.relists++;
        break;
      case Outcome::kAgain:
        break;
      case Outcome::kRetry:
        sleep_for(retry_after_);
        break;
      case Outcome::kBackoff: {
        // A watch that drops is resumed at once; repeated failures back off.
        if (progress_) failures = 0;
        progress_ = false;
        if (state_ != WatcherState::kEmpty && failures++ == 0) break;
        const auto d = options_.backoff.next();
        report(false, "failing; retrying in " + std::to_string(d.count()) + " s");
        sleep_for(d);
        break;
      }
      case Outcome::kStatus:  // handled where it happens
      case Outcome::kStopped:
        return;
    }
  }
}

Watcher::Outcome Watcher::classify(const ApiResponse& r, const std::string& what) {
  stats_.errors++;
  const std::string msg = error_text(r.body);
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

// ---- the paginated list -------------------------------------------------------------------

Watcher::Outcome Watcher::list() {
  set_state(WatcherState::kListing);
  std::string cont;
  std::string list_rv;
  Pager pager;  // kept for the whole list: its buffers fit a page
  util::log_debug("list started", {{"kind", options_.kind}, {"path", path()}});
  handler_.list_begin();
  for (;;) {
    if (stopped_) return Outcome::kStopped;
    std::string target = path() + "?limit=" + std::to_string(options_.page_size);
    if (!cont.empty()) target += "&continue=" + url_encode(cont);
    auto r = transport_->get(target, options_.request_timeout, options_.max_list_page_bytes);
    if (stopped_) return Outcome::kStopped;
    if (!r.ok()) {
      stats_.errors++;
      util::log_warn("list failed", {{"kind", options_.kind}, {"error", r.error().message}});
      set_state(WatcherState::kEmpty);
      return Outcome::kBackoff;
    }
    if (r->status == 404 && cont.empty() && next_path()) continue;
    if (r->status == 410 && !cont.empty()) {
      util::log_info("list continuation expired; listing again from the start",
                     {{"kind", options_.kind}});
      stats_.expired++;
      cont.clear();
      handler_.list_begin();
      continue;
    }
    if (r->status != 200) {
      set_state(WatcherState::kEmpty);
      return classify(*r, "GET " + target);
    }
    stats_.list_bytes += r->body.size();
    std::string next_cont;
    const Outcome o = list_page(pager, r->body, list_rv, next_cont);
    if (o != Outcome::kOk) {
      set_state(WatcherState::kEmpty);
      return o;
    }
    cont = std::move(next_cont);
    if (cont.empty()) break;
  }
  handler_.list_end();
  set_rv(list_rv);
  stats_.lists++;
  set_state(WatcherState::kListed);
  return Outcome::kOk;
}

// One page: items go to the handler as they are parsed; the page's metadata comes first or
// last.
Watcher::Outcome Watcher::list_page(Pager& pager, const std::string& body, std::string& list_rv,
                                    std::string& next_cont) {
  auto parse_meta = [&](od::object meta) -> simdjson::error_code {
    for (auto m : meta) {
      std::string_view key;
      if (auto err = m.unescaped_key().get(key)) return err;
      std::string_view v;
      if (key == "resourceVersion") {
        if (auto err = m.value().get_string().get(v)) return err;
        list_rv.assign(v);
      } else if (key == "continue") {
        if (auto err = m.value().get_string().get(v)) return err;
        next_cont.assign(v);
      }
    }
    return simdjson::SUCCESS;
  };
  auto parse_items = [&](od::value items_value) -> simdjson::error_code {
    if (items_value.is_null()) return simdjson::SUCCESS;
    od::array items;
    if (auto err = items_value.get_array().get(items)) return err;
    for (auto item : items) {
      od::object o;
      if (auto err = item.get_object().get(o)) return err;
      std::string_view raw;
      if (auto err = o.raw_json().get(raw)) return err;
      handler_.list_item(raw);
    }
    return simdjson::SUCCESS;
  };
  const simdjson::error_code err = util::guarded([&]() -> simdjson::error_code {
    od::document doc;
    if (auto e = pager.parser.iterate(util::pad(pager.padded, body)).get(doc)) return e;
    od::object top;
    if (auto e = doc.get_object().get(top)) return e;
    for (auto field : top) {
      std::string_view key;
      if (auto e = field.unescaped_key().get(key)) return e;
      if (key == "metadata") {
        od::object meta;
        if (auto e = field.value().get_object().get(meta)) return e;
        if (auto e = parse_meta(meta)) return e;
      } else if (key == "items") {
        if (auto e = parse_items(field.value())) return e;
      }
    }
    return simdjson::SUCCESS;
  });
  if (err) {
    stats_.errors++;
    util::log_warn("list response is not a valid list",
                   {{"kind", options_.kind}, {"error", simdjson::error_message(err)}});
    return Outcome::kBackoff;
  }
  return Outcome::kOk;
}

// ---- streams: the streaming list and the watch ----------------------------------------------

Watcher::Outcome Watcher::stream_list() {
  set_state(WatcherState::kStreaming);
  handler_.list_begin();
  const int timeout = random_timeout(options_.min_timeout_seconds);
  Stream s;
  s.initial = true;
  s.idle = std::chrono::seconds(timeout) + options_.idle_slack;
  s.target = path() +
             "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
             "&allowWatchBookmarks=true&timeoutSeconds=" +
             std::to_string(timeout);
  // The last complete state's version ("" after a 410: the newest, a consistent read).
  const std::string rv = resource_version();
  if (!rv.empty()) s.target += "&resourceVersion=" + url_encode(rv);
  util::log_debug("streaming list started", {{"kind", options_.kind}, {"target", s.target}});
  const Outcome o = run_stream(s, options_.initial_events_idle);
  if (s.listed) {  // the stream went on as a watch, and ended
    if (o == Outcome::kStatus || o == Outcome::kStopped) return o;
    set_state(o == Outcome::kRelist ? WatcherState::kEmpty : WatcherState::kListed);
    return o;
  }
  set_state(WatcherState::kEmpty);
  const auto silent = Clock::now() - s.last_data;
  const bool refused =
      o == Outcome::kStatus && (s.response.status == 400 || s.response.status == 422);
  const bool ignored = o == Outcome::kOk || (o == Outcome::kBackoff && !s.error_event &&
                                             silent >= options_.initial_events_idle);
  if (refused || ignored) {
    util::log_info(refused
                       ? "the API server refuses streaming lists; listing in pages from now on"
                       : "the API server ignored sendInitialEvents (no bookmark ended the initial "
                         "events); listing in pages from now on",
                   {{"kind", options_.kind},
                    {"status", std::to_string(s.response.status)},
                    {"message", refused ? error_text(s.response.body) : std::string()}});
    streaming_ = false;
    return Outcome::kAgain;
  }
  if (o == Outcome::kStatus) {
    if (s.response.status == 404 && next_path()) return Outcome::kAgain;
    if (s.response.status == 410) {
      stats_.expired++;
      return Outcome::kRelist;
    }
    return classify(s.response, "streaming list " + path());
  }
  return o;
}

Watcher::Outcome Watcher::watch() {
  set_state(WatcherState::kWatching);
  const int timeout = random_timeout(options_.min_timeout_seconds);
  Stream s;
  s.idle = std::chrono::seconds(timeout) + options_.idle_slack;
  s.target = path() + "?watch=1&resourceVersion=" + url_encode(resource_version()) +
             "&allowWatchBookmarks=true&timeoutSeconds=" + std::to_string(timeout);
  util::log_debug("watch started", {{"kind", options_.kind}, {"target", s.target}});
  Outcome o = run_stream(s, s.idle);
  if (o == Outcome::kStatus) {
    if (s.response.status == 410) {
      stats_.expired++;
      o = Outcome::kRelist;
    } else {
      o = classify(s.response, "watch " + path());
    }
  }
  if (o != Outcome::kStopped) {
    set_state(o == Outcome::kRelist ? WatcherState::kEmpty : WatcherState::kListed);
  }
  return o;
}

Watcher::Outcome Watcher::run_stream(Stream& s, std::chrono::milliseconds first_idle) {
  progress_ = false;
  s.last_data = Clock::now();
  auto r = transport_->stream(s.target, first_idle, options_.max_event_bytes,
                              [&](std::string_view line) { return on_line(s, line); });
  if (stopped_) return Outcome::kStopped;
  if (s.expired) {
    stats_.expired++;
    util::log_info("resourceVersion expired (410); listing again", {{"kind", options_.kind}});
    return Outcome::kRelist;
  }
  if (!r.ok()) {
    stats_.errors++;
    util::log_warn("watch interrupted; resuming from the last version seen",
                   {{"kind", options_.kind}, {"error", r.error().message}});
    return Outcome::kBackoff;
  }
  if (s.error_event) {
    stats_.errors++;
    return Outcome::kBackoff;
  }
  if (r->status != 200) {
    s.response = std::move(*r);
    return Outcome::kStatus;
  }
  stats_.watches++;
  return Outcome::kOk;
}

bool Watcher::on_line(Stream& s, std::string_view line) {
  util::injection_point("watcher");
  progress_ = true;
  s.last_data = Clock::now();
  WatchLine w;
  if (const auto err = parse_line(s.parser, s.object_parser, s.padded, line, s.initial, w)) {
    stats_.bad_lines++;
    util::log_warn("malformed watch event skipped", {{"kind", options_.kind},
                                                     {"error", simdjson::error_message(err)},
                                                     {"line", shorten(line)}});
    return true;
  }
  if (w.type == "ADDED" || w.type == "MODIFIED" || w.type == "DELETED") {
    const bool deleted = w.type == "DELETED";
    if (s.initial) {  // the state's version is the bookmark's, at the end
      if (deleted) {
        handler_.list_remove(w.object);
      } else {
        handler_.list_item(w.object);
      }
      stats_.list_bytes += line.size();
      return true;
    }
    handler_.event(deleted                ? EventType::kDeleted
                   : w.type == "MODIFIED" ? EventType::kModified
                                          : EventType::kAdded,
                   w.object);
    set_rv(w.rv);
    stats_.events++;
    return true;
  }
  if (w.type == "BOOKMARK") {
    stats_.bookmarks++;
    if (!s.initial) {
      set_rv(w.rv);
    } else if (w.initial_events_end) {
      s.initial = false;
      s.listed = true;
      handler_.list_end();
      set_rv(w.rv);
      stats_.lists++;
      stats_.streaming_lists++;
      set_state(WatcherState::kWatching);
      transport_->set_idle(s.idle);
      options_.backoff.reset();
      report(true, "watching");
    }
    return true;
  }
  if (w.type == "ERROR") {
    if (w.code == 410) {
      s.expired = true;
    } else {
      s.error_event = true;
      util::log_warn("watch ERROR event", {{"kind", options_.kind},
                                           {"code", std::to_string(w.code)},
                                           {"message", std::string(w.message)}});
    }
    return false;
  }
  stats_.bad_lines++;
  util::log_warn("watch event of unknown type skipped",
                 {{"kind", options_.kind}, {"type", std::string(w.type)}});
  return true;
}

}  // namespace tollgate::k8s
