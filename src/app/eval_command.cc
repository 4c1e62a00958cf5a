// `tollgate eval`: parse, compile (cached per distinct policy set), evaluate.
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <string>
#include <unordered_map>
#include <vector>

#include "tollgate/app/cli.h"
#include "tollgate/compile/compile.h"
#include "tollgate/eval/evaluate.h"
#include "tollgate/policy/parse.h"
#include "tollgate/policy/values.h"
#include "tollgate/util/strings.h"

namespace tollgate::app {
namespace {

using nlohmann::json;

struct Compiled {
  compile::DecisionTable table;
};

// Decision for one input object, or {"error": ...}.
json decide(const json& in, std::unordered_map<std::string, Compiled>& cache) {
  if (!in.is_object()) return {{"error", "input: must be an object"}};
  for (const auto& [key, val] : in.items()) {
    if (key != "policies" && key != "workload" && key != "request" && key != "mesh") {
      return {{"error", "input." + key + ": unknown field"}};
    }
  }
  auto pit = in.find("policies");
  if (pit != in.end() && !pit->is_null() && !pit->is_array()) {
    return {{"error", "policies: must be a list of AuthorizationPolicy objects"}};
  }
  auto wit = in.find("workload");
  if (wit == in.end()) return {{"error", "workload: is required"}};
  auto rit = in.find("request");
  if (rit == in.end()) return {{"error", "request: is required"}};
  auto mit = in.find("mesh");

  std::string key;
  if (pit != in.end()) key = pit->dump();
  key += '\x1f';
  key += wit->dump();
  key += '\x1f';
  if (mit != in.end()) key += mit->dump();
  auto cached = cache.find(key);
  if (cached == cache.end()) {
    auto mesh = policy::parse_mesh(mit == in.end() ? json() : *mit);
    if (!mesh.ok()) return {{"error", mesh.error().message}};
    auto workload = policy::parse_workload(*wit);
    if (!workload.ok()) return {{"error", workload.error().message}};
    std::vector<policy::Policy> policies;
    if (pit != in.end() && pit->is_array()) {
      for (std::size_t i = 0; i < pit->size(); ++i) {
        const json& p = (*pit)[i];
        if (!policy::is_authorization_policy(p)) {
          return {
              {"error", "policies[" + std::to_string(i) + "]: kind must be AuthorizationPolicy"}};
        }
        policies.push_back(policy::parse_policy(p));
      }
    }
    if (cache.size() > 4096) cache.clear();
    cached =
        cache.emplace(std::move(key), Compiled{compile::compile_table(policies, *workload, *mesh)})
            .first;
  }
  auto request = eval::parse_request(*rit);
  if (!request.ok()) return {{"error", request.error().message}};
  const auto& table = cached->second.table;
  eval::PreparedRequest prepared;
  eval::prepare(*request, table.path_normalization, prepared);
  const eval::Decision d = eval::evaluate(table, prepared);
  return eval::decision_json(table, d, prepared);
}

json parse_and_decide(std::string_view text, std::unordered_map<std::string, Compiled>& cache) {
  json in;
  try {
    in = json::parse(text);
  } catch (const json::exception& e) {
    return {{"error", std::string("input is not valid JSON: ") + e.what()}};
  }
  return decide(in, cache);
}

// The --jsonl fast path: simdjson finds the raw text of "policies", "workload" and "mesh"
// without building a DOM, so a stream that repeats its policies compiles them once; only
// the small request object goes through the full parser. Anything unusual (invalid JSON,
// wrong types, unknown keys) falls back to the slow path, which words the error.
class LineEvaluator {
 public:
  // Appends the decision to `out` and returns null, or returns what to write instead (an
  // error, or a decision from the slow path).
  json decide_line(std::string& line, std::string& out) {
    const std::size_t size = line.size();
    line.reserve(size + simdjson::SIMDJSON_PADDING);
    std::string_view policies, workload, request, mesh;
    bool fast = true;
    {
      simdjson::ondemand::document doc;
      simdjson::ondemand::object obj;
      if (parser_.iterate(line.data(), size, line.capacity()).get(doc) ||
          doc.get_object().get(obj)) {
        fast = false;
      } else {
        for (auto field : obj) {
          std::string_view key;
          simdjson::ondemand::value v;
          if (field.unescaped_key().get(key) || field.value().get(v)) {
            fast = false;
            break;
          }
          std::string_view* slot = key == "policies"   ? &policies
                                   : key == "workload" ? &workload
                                   : key == "request"  ? &request
                                   : key == "mesh"     ? &mesh
                                                       : nullptr;
          if (slot == nullptr) {
            fast = false;
            break;
          }
          simdjson::ondemand::json_type type;
          if (v.type().get(type)) {
            fast = false;
            break;
          }
          simdjson::error_code err = simdjson::SUCCESS;
          if (type == simdjson::ondemand::json_type::array && slot == &policies) {
            simdjson::ondemand::array arr;
            err = v.get_array().get(arr);
            if (!err) err = arr.raw_json().get(*slot);
          } else if (type == simdjson::ondemand::json_type::object && slot != &policies) {
            simdjson::ondemand::object o;
            err = v.get_object().get(o);
            if (!err) err = o.raw_json().get(*slot);
          } else {
            err = simdjson::INCORRECT_TYPE;
          }
          if (err) {
            fast = false;
            break;
          }
        }
      }
    }
    if (!fast || workload.empty() || request.empty()) {
      return parse_and_decide(std::string_view(line.data(), size), cache_);
    }
    const Compiled* compiled = lookup(policies, workload, mesh);
    if (compiled == nullptr) return parse_and_decide(std::string_view(line.data(), size), cache_);
    eval::Request req;
    const std::size_t room = line.data() + line.capacity() - request.data();
    if (!fast_request(request, room, req)) {
      // Anything unusual (or wrong) goes through the full parser, which words errors.
      json req_json;
      try {
        req_json = json::parse(request);
      } catch (const json::exception&) {
        return parse_and_decide(std::string_view(line.data(), size), cache_);
      }
      auto parsed = eval::parse_request(req_json);
      if (!parsed.ok()) return {{"error", parsed.error().message}};
      req = std::move(*parsed);
    }
    const auto& table = compiled->table;
    eval::PreparedRequest prepared;
    eval::prepare(req, table.path_normalization, prepared);
    eval::append_decision_json(out, table, eval::evaluate(table, prepared), prepared);
    return nullptr;
  }

 private:
  // The plain request shapes, read straight from simdjson: strings, an integer port, string
  // headers, a claims object. Returns false for anything else (or anything invalid): the
  // caller then uses eval::parse_request, the one place that words errors.
  bool fast_request(std::string_view text, std::size_t room, eval::Request& r) {
    simdjson::ondemand::document doc;
    simdjson::ondemand::object obj;
    if (parser_.iterate(text.data(), text.size(), room).get(doc) || doc.get_object().get(obj)) {
      return false;
    }
    for (auto field : obj) {
      std::string_view key;
      simdjson::ondemand::value v;
      if (field.unescaped_key().get(key) || field.value().get(v)) return false;
      if (!fast_field(key, v, r)) return false;
    }
    if (!r.remote_ip) r.remote_ip = r.source_ip;
    return !eval::request_principal_conflict(r);  // the full parser words the error
  }

  static bool fast_string(simdjson::ondemand::value v, std::optional<std::string>& out) {
    std::string_view s;
    if (v.get_string().get(s)) return false;
    out = std::string(s);
    return true;
  }

  // One member of a request; false: not a plain shape.
  static bool fast_field(std::string_view key, simdjson::ondemand::value v, eval::Request& r) {
    if (key == "protocol") {
      std::string_view s;
      if (v.get_string().get(s) || (s != "tcp" && s != "http")) return false;
      r.tcp = s == "tcp";
      return true;
    }
    if (key == "source") return fast_source(v, r);
    if (key == "method") return fast_string(v, r.method);
    if (key == "path") return fast_string(v, r.path);
    if (key == "host") return fast_string(v, r.host);
    if (key == "sni") return fast_string(v, r.sni);
    if (key == "requestPrincipal") return fast_string(v, r.request_principal);
    if (key == "destinationIp") {
      return fast_string(v, r.destination_ip) && policy::parse_ip(*r.destination_ip);
    }
    if (key == "port") {
      std::int64_t port = 0;
      if (v.get_int64().get(port) || port < 0 || port > 65535) return false;
      r.port = static_cast<int>(port);
      return true;
    }
    if (key == "headers") return fast_headers(v, r);
    if (key == "jwtClaims") {
      simdjson::ondemand::object claims;
      std::string_view raw;
      if (v.get_object().get(claims) || claims.raw_json().get(raw)) return false;
      try {
        r.jwt_claims = json::parse(raw);
      } catch (const json::exception&) {
        return false;
      }
      return true;
    }
    if (key == "extAuthzDecision") {
      std::string_view s;
      if (v.get_string().get(s) || (s != "ALLOW" && s != "DENY")) return false;
      r.ext_authz_default = std::string(s);
      return true;
    }
    return false;
  }

  static bool fast_source(simdjson::ondemand::value v, eval::Request& r) {
    simdjson::ondemand::object src;
    if (v.get_object().get(src)) return false;
    for (auto f : src) {
      std::string_view k, s;
      if (f.unescaped_key().get(k) || f.value().get_string().get(s)) return false;
      if (k == "principal") {
        if (s.substr(0, 9) == "spiffe://") s.remove_prefix(9);
        if (s.empty()) return false;
        r.principal = std::string(s);
      } else if (k == "ip" || k == "remoteIp") {
        if (!policy::parse_ip(s)) return false;
        (k == "ip" ? r.source_ip : r.remote_ip) = std::string(s);
      } else {
        return false;
      }
    }
    return true;
  }

  static bool fast_headers(simdjson::ondemand::value v, eval::Request& r) {
    simdjson::ondemand::object hs;
    if (v.get_object().get(hs)) return false;
    for (auto f : hs) {
      std::string_view k, s;
      if (f.unescaped_key().get(k) || f.value().get_string().get(s)) return false;
      std::string lower = util::lowered(k);
      for (const auto& h : r.headers) {
        if (h.first == lower) return false;  // repeated names: joined by the full parser
      }
      r.headers.emplace_back(std::move(lower), std::string(s));
    }
    return true;
  }

  const Compiled* lookup(std::string_view policies, std::string_view workload,
                         std::string_view mesh) {
    key_.clear();
    key_.append(policies).push_back('\x1f');
    key_.append(workload).push_back('\x1f');
    key_.append(mesh);
    if (last_ != nullptr && key_ == last_key_) return last_;
    auto it = fast_cache_.find(key_);
    if (it == fast_cache_.end()) {
      json in;
      try {
        in = {{"workload", json::parse(workload)}, {"request", json::object()}};
        if (!policies.empty()) in["policies"] = json::parse(policies);
        if (!mesh.empty()) in["mesh"] = json::parse(mesh);
      } catch (const json::exception&) {
        return nullptr;
      }
      // Compile through the slow path's validation; an error is not cached here.
      auto mesh_cfg = policy::parse_mesh(in.contains("mesh") ? in["mesh"] : json());
      auto w = policy::parse_workload(in["workload"]);
      if (!mesh_cfg.ok() || !w.ok()) return nullptr;
      std::vector<policy::Policy> ps;
      if (in.contains("policies")) {
        for (const auto& p : in["policies"]) {
          if (!policy::is_authorization_policy(p)) return nullptr;
          ps.push_back(policy::parse_policy(p));
        }
      }
      if (fast_cache_.size() > 4096) {
        fast_cache_.clear();
        last_ = nullptr;
      }
      it = fast_cache_.emplace(key_, Compiled{compile::compile_table(ps, *w, *mesh_cfg)}).first;
    }
    last_key_ = key_;
    last_ = &it->second;
    return last_;
  }

  simdjson::ondemand::parser parser_;
  std::unordered_map<std::string, Compiled> cache_;
  std::unordered_map<std::string, Compiled> fast_cache_;
  std::string key_, last_key_;
  const Compiled* last_ = nullptr;
};

}  // namespace

namespace {

// Reads lines from a streambuf in large chunks, holding at most `max` bytes of any line: a
// longer line is consumed to its end and reported, not stored.
class LineReader {
 public:
  enum class Got : std::uint8_t { kLine, kTooLong, kEnd };

  LineReader(std::streambuf& in, std::size_t max) : in_(in), max_(max), buf_(1 << 16) {}

  // Whether the next line can be read without waiting for input.
  bool ready() const { return pos_ < end_ || in_.in_avail() > 0; }

  Got next(std::string& line) {
    line.clear();
    bool too_long = false, any = false;
    for (;;) {
      if (pos_ == end_ && !fill()) {
        if (!any) return Got::kEnd;
        return too_long ? Got::kTooLong : Got::kLine;
      }
      any = true;
      const char* begin = buf_.data() + pos_;
      const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', end_ - pos_));
      const std::size_t n = nl != nullptr ? static_cast<std::size_t>(nl - begin) : end_ - pos_;
      if (!too_long && line.size() + n > max_) {
        too_long = true;
        line.clear();
        line.shrink_to_fit();
      }
      if (!too_long) line.append(begin, n);
      pos_ += n;
      if (nl != nullptr) {
        ++pos_;
        return too_long ? Got::kTooLong : Got::kLine;
      }
    }
  }

 private:
  // Takes what the stream has buffered (one read when it has nothing), never waiting for a
  // whole chunk: a caller writing a line and waiting for its answer is not held up.
  bool fill() {
    pos_ = end_ = 0;
    using Traits = std::streambuf::traits_type;
    if (Traits::eq_int_type(in_.sgetc(), Traits::eof())) return false;
    const std::streamsize want =
        std::clamp<std::streamsize>(in_.in_avail(), 1, static_cast<std::streamsize>(buf_.size()));
    const auto got = in_.sgetn(buf_.data(), want);
    end_ = got > 0 ? static_cast<std::size_t>(got) : 0;
    return end_ > 0;
  }

  std::streambuf& in_;
  std::size_t max_;
  std::vector<char> buf_;
  std::size_t pos_ = 0, end_ = 0;
};

std::string too_long_error(std::size_t max) {
  return "longer than " + std::to_string(max) + " bytes (--max-input-bytes); skipped";
}

}  // namespace

int run_eval(std::istream& in, std::ostream& out, bool jsonl, std::size_t max_input_bytes) {
  int status = 0;
  std::streambuf& sb = *in.rdbuf();
  if (!jsonl) {
    std::unordered_map<std::string, Compiled> cache;
    std::string text;
    std::vector<char> chunk(1 << 16);
    for (;;) {
      const auto got = sb.sgetn(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      if (got <= 0) break;
      if (text.size() + static_cast<std::size_t>(got) > max_input_bytes) {
        out << json{{"error", "input " + too_long_error(max_input_bytes)}}.dump(2) << "\n";
        return 1;
      }
      text.append(chunk.data(), static_cast<std::size_t>(got));
    }
    json d = parse_and_decide(text, cache);
    if (d.contains("error")) status = 1;
    out << d.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
    return status;
  }
  LineEvaluator evaluator;
  LineReader reader(sb, max_input_bytes);
  std::string line;
  std::string out_buf;
  std::size_t lineno = 0;
  for (;;) {
    if (!out_buf.empty() && !reader.ready()) {  // about to wait for input: answer what we have
      out << out_buf;
      out.flush();
      out_buf.clear();
    }
    const auto got = reader.next(line);
    if (got == LineReader::Got::kEnd) break;
    ++lineno;
    json d;
    if (got == LineReader::Got::kTooLong) {
      d = json{{"error", too_long_error(max_input_bytes)}};
    } else if (line.find_first_not_of(" \t\r") == std::string::npos) {
      continue;
    } else {
      d = evaluator.decide_line(line, out_buf);
    }
    if (!d.is_null()) {
      if (d.contains("error")) {
        status = 1;
        d["error"] = "line " + std::to_string(lineno) + ": " + d["error"].get<std::string>();
      }
      out_buf += d.dump(-1, ' ', false, json::error_handler_t::replace);
    }
    out_buf += '\n';
    if (out_buf.size() > (1u << 16)) {
      out << out_buf;
      out_buf.clear();
    }
  }
  out << out_buf;
  out.flush();
  return status;
}

}  // namespace tollgate::app
