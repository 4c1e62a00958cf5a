#include "tollgate/source/directory.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "tollgate/util/log.h"

namespace tollgate::source {

namespace fs = std::filesystem;

namespace {

constexpr int kKinds = index::kKindCount;

std::uint64_t hash_key(const std::string& key) { return std::hash<std::string>{}(key); }

// A file's objects as the index takes them, per kind (Services are for lint only).
struct Split {
  std::vector<index::Object> objects[kKinds];
};

Split split(FileObjects f) {
  Split s;
  s.objects[static_cast<int>(index::Kind::kPolicy)].reserve(f.policies.size());
  s.objects[static_cast<int>(index::Kind::kPod)].reserve(f.pods.size());
  s.objects[static_cast<int>(index::Kind::kServiceAccount)].reserve(f.service_accounts.size());
  s.objects[static_cast<int>(index::Kind::kNamespace)].reserve(f.namespaces.size());
  for (auto& p : f.policies) {
    s.objects[static_cast<int>(index::Kind::kPolicy)].emplace_back(std::move(p));
  }
  for (auto& p : f.pods) s.objects[static_cast<int>(index::Kind::kPod)].emplace_back(std::move(p));
  for (auto& sa : f.service_accounts) {
    s.objects[static_cast<int>(index::Kind::kServiceAccount)].emplace_back(std::move(sa));
  }
  for (auto& ns : f.namespaces) {
    s.objects[static_cast<int>(index::Kind::kNamespace)].emplace_back(
        index::NamedObject{"", std::move(ns)});
  }
  return s;
}

// An object that names what to delete.
index::Object tombstone(int kind, const std::string& key) {
  const auto slash = key.find('/');
  const std::string ns = slash == std::string::npos ? "" : key.substr(0, slash);
  const std::string name = slash == std::string::npos ? key : key.substr(slash + 1);
  switch (static_cast<index::Kind>(kind)) {
    case index::Kind::kPolicy: {
      policy::Policy p;
      p.namespace_ = ns;
      p.name = name;
      return index::PolicyObject{std::make_shared<const policy::Policy>(std::move(p)), "", nullptr};
    }
    case index::Kind::kPod: {
      index::PodObject p;
      p.namespace_ = ns;
      p.name = name;
      return p;
    }
    case index::Kind::kServiceAccount:
    case index::Kind::kNamespace:
      break;
  }
  return index::NamedObject{ns, name};
}

bool has(const std::vector<std::string>& sorted, const std::string& key) {
  return std::binary_search(sorted.begin(), sorted.end(), key);
}

std::string summary(const std::vector<std::string>& problems) {
  std::string out;
  for (std::size_t i = 0; i < problems.size() && i < 5; ++i) out += (i ? "; " : "") + problems[i];
  if (problems.size() > 5) out += "; and " + std::to_string(problems.size() - 5) + " more";
  return out;
}

}  // namespace

DirectorySource::DirectorySource(std::vector<std::string> paths, Sink sink,
                                 DirectoryOptions options)
    : paths_(std::move(paths)), sink_(std::move(sink)), options_(options) {}

DirectorySource::~DirectorySource() { stop(); }

std::vector<std::string> DirectorySource::load() {
  std::lock_guard lock(mu_);
  return listed_ ? reload({}) : load_all();
}

// Before the first complete read: every file, and the complete state only if all of them read.
std::vector<std::string> DirectorySource::load_all() {
  std::vector<std::string> problems;
  const auto files = list_files(paths_, problems);
  std::vector<index::Object> all[kKinds];
  std::map<std::string, FileState> next;
  for (std::size_t i = 0; i < files.size(); ++i) {
    FileState& st = next[files[i]];
    st.rank = i;
    st.identity = identity_of(files[i]);
    auto objects = read_file(files[i], options_.read);
    files_read_++;
    if (!objects.ok()) {
      st.error = objects.error().message;
      problems.push_back(st.error);
      continue;
    }
    Split s = split(std::move(*objects));
    for (int k = 0; k < kKinds; ++k) {
      st.keys[k].reserve(s.objects[k].size());
      for (const auto& o : s.objects[k]) st.keys[k].push_back(index::object_key(o));
      if (all[k].empty()) {
        all[k] = std::move(s.objects[k]);
      } else {
        all[k].insert(all[k].end(), std::make_move_iterator(s.objects[k].begin()),
                      std::make_move_iterator(s.objects[k].end()));
      }
      std::sort(st.keys[k].begin(), st.keys[k].end());
      st.keys[k].erase(std::unique(st.keys[k].begin(), st.keys[k].end()), st.keys[k].end());
    }
  }
  files_ = std::move(next);
  for (auto& d : defined_) d.clear();
  for (const auto& [path, st] : files_) {
    for (int k = 0; k < kKinds; ++k) {
      for (const auto& key : st.keys[k]) defined_[k][hash_key(key)]++;
    }
  }
  reloads_++;
  if (problems.empty()) {
    // Objects are in file order: where two files define one, the later upsert wins.
    for (int k = 0; k < kKinds; ++k) {
      index::Event e;
      e.kind = static_cast<index::Kind>(k);
      e.type = index::Event::Type::kReplace;
      e.objects = std::move(all[k]);
      sink_(std::move(e));
    }
    listed_ = true;
  }
  report(problems);
  return problems;
}

DirectorySource::Identity DirectorySource::identity_of(const std::string& path) {
  struct stat st {};
  Identity id;
  if (::stat(path.c_str(), &st) != 0) return id;
  id.dev = st.st_dev;
  id.ino = st.st_ino;
  id.size = static_cast<std::uint64_t>(st.st_size);
  id.mtime_ns = st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec;
  id.ctime_ns = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec;
  return id;
}

// After the first complete read: only new, changed (or hinted) and removed files.
std::vector<std::string> DirectorySource::reload(const std::set<std::string>& hinted) {
  std::vector<std::string> list_problems;
  const auto files = list_files(paths_, list_problems);
  Batch batch;
  std::map<std::string, std::vector<std::pair<int, std::string>>> fallback;
  // A path that cannot be listed keeps its files' content: a vanished mount is not a
  // deletion of every policy in it.
  if (list_problems.empty()) {
    const std::set<std::string> present(files.begin(), files.end());
    std::vector<std::string> removed;
    for (auto& [path, st] : files_) {
      if (present.contains(path)) continue;
      apply_file(path, st, FileObjects{}, batch, fallback);
      removed.push_back(path);
    }
    for (const auto& path : removed) files_.erase(path);
  }
  for (std::size_t i = 0; i < files.size(); ++i) {
    const Identity id = identity_of(files[i]);
    auto it = files_.find(files[i]);
    if (it != files_.end()) {
      it->second.rank = i;
      if (it->second.identity == id && !hinted.contains(files[i])) continue;
    }
    FileState& st = files_[files[i]];
    st.rank = i;
    st.identity = id;
    auto objects = read_file(files[i], options_.read);
    files_read_++;
    if (!objects.ok()) {
      // A file that no longer reads (half-written, a typo) keeps its last good content:
      // dropping its policies could open access that a DENY policy in it closes.
      st.error = objects.error().message;
      util::log_warn("manifest cannot be read; keeping its last good version",
                     {{"file", files[i]}, {"error", st.error}});
      continue;
    }
    st.error.clear();
    apply_file(files[i], st, std::move(*objects), batch, fallback);
  }
  resolve_fallbacks(fallback, batch);
  send(batch);
  reloads_++;
  std::vector<std::string> problems = std::move(list_problems);
  for (const auto& [path, st] : files_) {
    if (!st.error.empty()) problems.push_back(st.error);
  }
  report(problems);
  return problems;
}

// A file's new content (nothing, for a removed file) against what it held: upserts for what it
// defines (unless a later file defines it too), deletes for what it no longer defines (unless
// another file does: then that file's version, read again, or the later file's, stands).
void DirectorySource::apply_file(
    const std::string& path, FileState& st, FileObjects objects, Batch& batch,
    std::map<std::string, std::vector<std::pair<int, std::string>>>& fallback) {
  (void)path;
  Split s = split(std::move(objects));
  for (int k = 0; k < kKinds; ++k) {
    std::vector<std::string> keys;
    keys.reserve(s.objects[k].size());
    for (const auto& o : s.objects[k]) keys.push_back(index::object_key(o));
    std::vector<std::string> sorted = keys;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::vector<std::string> added, gone;
    std::set_difference(sorted.begin(), sorted.end(), st.keys[k].begin(), st.keys[k].end(),
                        std::back_inserter(added));
    std::set_difference(st.keys[k].begin(), st.keys[k].end(), sorted.begin(), sorted.end(),
                        std::back_inserter(gone));
    for (const auto& key : added) defined_[k][hash_key(key)]++;
    for (const auto& key : gone) {
      auto it = defined_[k].find(hash_key(key));
      if (it != defined_[k].end() && --it->second == 0) defined_[k].erase(it);
    }
    for (std::size_t j = 0; j < keys.size(); ++j) {
      if (!defined_after(k, keys[j], st.rank))
        batch.upserts[k].push_back(std::move(s.objects[k][j]));
    }
    for (const auto& key : gone) {
      if (defined_after(k, key, st.rank)) continue;  // the later file's version stands
      if (const std::string* owner = last_owner(k, key, st.rank)) {
        fallback[*owner].emplace_back(k, key);
      } else {
        batch.deletes[k].push_back(tombstone(k, key));
      }
    }
    st.keys[k] = std::move(sorted);
  }
}

// Whether a file after `rank` defines the key.
bool DirectorySource::defined_after(int kind, const std::string& key, std::size_t rank) const {
  auto it = defined_[kind].find(hash_key(key));
  if (it == defined_[kind].end() || it->second <= 1) return false;  // this file's only
  return std::any_of(files_.begin(), files_.end(), [&](const auto& f) {
    return f.second.rank > rank && has(f.second.keys[kind], key);
  });
}

// The last file before `rank` that defines the key, if any.
const std::string* DirectorySource::last_owner(int kind, const std::string& key,
                                               std::size_t rank) const {
  auto it = defined_[kind].find(hash_key(key));
  if (it == defined_[kind].end()) return nullptr;
  const std::string* owner = nullptr;
  std::size_t best = 0;
  for (const auto& [path, st] : files_) {
    if (st.rank < rank && (owner == nullptr || st.rank > best) && has(st.keys[kind], key)) {
      owner = &path;
      best = st.rank;
    }
  }
  return owner;
}

// Objects another file now provides: that file is read again for them.
void DirectorySource::resolve_fallbacks(
    std::map<std::string, std::vector<std::pair<int, std::string>>>& fallback, Batch& batch) {
  for (auto& [path, wanted] : fallback) {
    auto objects = read_file(path, options_.read);
    files_read_++;
    if (!objects.ok()) {
      util::log_warn("manifest cannot be read again for an object another file dropped",
                     {{"file", path}, {"error", objects.error().message}});
      continue;
    }
    Split s = split(std::move(*objects));
    for (const auto& [kind, key] : wanted) {
      for (auto& o : s.objects[kind]) {
        if (index::object_key(o) == key) batch.upserts[kind].push_back(o);
      }
    }
  }
}

void DirectorySource::send(Batch& batch) {
  auto emit = [&](int kind, index::Event::Type type, std::vector<index::Object> objects) {
    if (objects.empty()) return;
    index::Event e;
    e.kind = static_cast<index::Kind>(kind);
    e.type = type;
    e.objects = std::move(objects);
    sink_(std::move(e));
  };
  for (int k = 0; k < kKinds; ++k) {
    emit(k, index::Event::Type::kDelete, std::exchange(batch.deletes[k], {}));
    emit(k, index::Event::Type::kUpsert, std::exchange(batch.upserts[k], {}));
  }
}

// Each kind's health: not listed (naming the files that cannot be read), or listed with the
// files whose last good version is kept.
void DirectorySource::report(const std::vector<std::string>& problems) {
  for (const auto& p : problems) util::log_warn("manifest problem", {{"error", p}});
  const bool healthy = listed_;
  std::string message;
  if (!listed_) {
    message = "not ready until every manifest can be read: " + summary(problems);
  } else if (problems.empty()) {
    message = "watching " + std::to_string(files_.size()) + " manifest files";
  } else {
    message = "keeping the last good version of what cannot be read: " + summary(problems);
  }
  if (message == last_report_) return;
  last_report_ = message;
  for (int k = 0; k < kKinds; ++k) {
    index::Event e;
    e.kind = static_cast<index::Kind>(k);
    e.type = index::Event::Type::kHealth;
    e.healthy = healthy;
    e.message = message;
    sink_(std::move(e));
  }
}

void DirectorySource::add_watches() {
  constexpr std::uint32_t kMask = IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                  IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;
  auto watch = [&](const fs::path& p) {
    const int wd = inotify_add_watch(inotify_fd_, p.c_str(), kMask);
    if (wd < 0) {
      util::log_warn("cannot watch for changes", {{"path", p.string()}});
    } else {
      watched_[wd] = p.string();
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

void DirectorySource::start() {
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
  thread_ = std::thread([this] {
    if (auto failure = util::run_catching([this] { watch_loop(); })) {
      util::report_thread_failure(options_.failures, "manifest watch", *failure);
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

void DirectorySource::watch_loop() {
  alignas(inotify_event) char buf[16384];
  bool dirty = false;
  std::set<std::string> hinted;  // files named by the events: read again whatever their stat
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int timeout = dirty ? static_cast<int>(options_.settle.count()) : -1;
    const int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) {
      throw std::runtime_error("poll: " + std::generic_category().message(errno));
    }
    if (fds[1].revents != 0) return;
    if (n == 0 && dirty) {  // quiet for `settle`: read what changed
      dirty = false;
      add_watches();  // new subdirectories, or a swapped ..data target
      {
        std::lock_guard lock(mu_);
        if (listed_) {
          reload(hinted);
        } else {
          load_all();
        }
      }
      hinted.clear();
      continue;
    }
    if ((fds[0].revents & POLLIN) == 0) continue;
    ssize_t len = 0;
    while ((len = read(inotify_fd_, buf, sizeof buf)) > 0) {
      util::injection_point("directory");
      dirty = true;
      for (char* p = buf; p < buf + len;) {
        const auto* ev = reinterpret_cast<const inotify_event*>(p);
        if (ev->len > 0) {
          if (auto it = watched_.find(ev->wd); it != watched_.end()) {
            hinted.insert((fs::path(it->second) / ev->name).string());
          }
        }
        p += sizeof(inotify_event) + ev->len;
      }
    }
  }
}

}  // namespace tollgate::source
