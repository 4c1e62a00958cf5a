#include "tollgate/source/directory.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>

#include "tollgate/util/log.h"

namespace tollgate::source {

namespace fs = std::filesystem;

std::vector<index::Event> replace_events(const ClusterState& state) {
  std::vector<index::Event> out(4);
  out[0].kind = index::Kind::kPolicy;
  out[1].kind = index::Kind::kPod;
  out[2].kind = index::Kind::kServiceAccount;
  out[3].kind = index::Kind::kNamespace;
  for (auto& e : out) e.type = index::Event::Type::kReplace;
  for (std::size_t i = 0; i < state.policies.size(); ++i) {
    index::PolicyObject p;
    p.policy = std::make_shared<const policy::Policy>(state.policies[i]);
    p.fingerprint = i < state.policy_fingerprints.size() ? state.policy_fingerprints[i] : "";
    out[0].objects.emplace_back(std::move(p));
  }
  for (const auto& w : state.workloads) out[1].objects.emplace_back(index::pod_object(w));
  for (const auto& sa : state.service_accounts) {
    const auto slash = sa.find('/');
    out[2].objects.emplace_back(index::NamedObject{sa.substr(0, slash), sa.substr(slash + 1)});
  }
  for (const auto& ns : state.namespaces) {
    out[3].objects.emplace_back(index::NamedObject{"", ns});
  }
  return out;
}

DirectorySource::DirectorySource(std::vector<std::string> paths, Sink sink)
    : paths_(std::move(paths)), sink_(std::move(sink)) {}

DirectorySource::~DirectorySource() { stop(); }

std::vector<std::string> DirectorySource::load() {
  ClusterState state;
  std::map<std::string, std::vector<policy::Document>> next;
  for (const auto& f : list_files(paths_, state.errors)) {
    auto docs = read_file(f);
    if (docs.ok()) {
      next[f] = std::move(*docs);
      continue;
    }
    state.errors.push_back(docs.error().message);
    // A file that no longer parses (half-written, a typo) keeps its last good content:
    // dropping its policies could open access that a DENY policy in it closes.
    if (auto it = last_good_.find(f); it != last_good_.end()) {
      util::log_warn("manifest no longer parses; keeping its previous version",
                     {{"file", f}, {"error", docs.error().message}});
      next[f] = std::move(it->second);
    }
  }
  last_good_ = std::move(next);
  for (const auto& [f, docs] : last_good_) {
    for (const auto& d : docs) add_object(state, d.object, d.origin);
  }
  for (const auto& e : state.errors) util::log_warn("manifest problem", {{"error", e}});
  for (auto& e : replace_events(state)) sink_(std::move(e));
  reloads_++;
  return state.errors;
}

void DirectorySource::add_watches() {
  constexpr std::uint32_t kMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                  IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;
  auto watch = [&](const fs::path& p) {
    if (inotify_add_watch(inotify_fd_, p.c_str(), kMask) < 0) {
      util::log_warn("cannot watch for changes", {{"path", p.string()}});
    }
  };
  for (const auto& p : paths_) {
    std::error_code ec;
    const fs::path path(p);
    // A file is watched through its directory, so a replaced file is still seen.
    if (!fs::is_directory(path, ec)) {
      watch(path.has_parent_path() ? path.parent_path() : fs::path("."));
      continue;
    }
    watch(path);
    for (fs::recursive_directory_iterator
             it(path, fs::directory_options::follow_directory_symlink, ec),
         end;
         !ec && it != end; it.increment(ec)) {
      if (it->is_directory(ec)) watch(it->path());
    }
  }
}

void DirectorySource::start(std::chrono::milliseconds settle) {
  if (thread_.joinable()) return;
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (inotify_fd_ < 0 || stop_fd_ < 0) {
    util::log_error("inotify unavailable: manifests are read once and not watched");
    load();
    return;
  }
  add_watches();
  load();
  thread_ = std::thread([this, settle] {
    try {
      watch_loop(settle);
    } catch (const std::exception& e) {
      util::log_error("manifest watch failed", {{"error", e.what()}});
    }
  });
}

void DirectorySource::stop() {
  if (stop_fd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  inotify_fd_ = stop_fd_ = -1;
}

void DirectorySource::watch_loop(std::chrono::milliseconds settle) {
  alignas(inotify_event) char buf[16384];
  bool dirty = false;
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int timeout = dirty ? static_cast<int>(settle.count()) : -1;
    const int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) throw std::runtime_error("poll failed");
    if (fds[1].revents != 0) return;
    if (n == 0 && dirty) {  // quiet for `settle`: read everything again
      dirty = false;
      add_watches();  // new subdirectories, or a swapped ..data target
      load();
      continue;
    }
    if ((fds[0].revents & POLLIN) != 0) {
      while (read(inotify_fd_, buf, sizeof buf) > 0) dirty = true;
    }
  }
}

}  // namespace tollgate::source
