#include "tollgate/util/file.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "support/run.h"

namespace fs = std::filesystem;
using namespace tollgate;

namespace {

std::size_t files_in(const fs::path& dir) {
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), {}));
}

}  // namespace

TEST_CASE("read_file reads whole files and refuses what is too large, missing or a directory") {
  testing::TempDir dir;
  const auto path = (dir.path() / "f").string();
  testing::write_file(path, std::string(1000, 'x'));
  CHECK(*util::read_file(path, 1000) == std::string(1000, 'x'));
  CHECK(util::read_file(path, 999).error().message == path + ": larger than 999 bytes, not read");
  CHECK(util::read_file((dir.path() / "none").string(), 10).error().message ==
        (dir.path() / "none").string() + ": No such file or directory");
  CHECK(util::read_file(dir.path().string(), 10).error().message ==
        dir.path().string() + ": is a directory");
  testing::write_file(path, "");
  CHECK(*util::read_file(path, 0) == "");
}

TEST_CASE("read_file caps what it reads even when the size is not known in advance") {
  // /dev/zero has no size: the cap must stop the read, not memory.
  auto r = util::read_file("/dev/zero", 1 << 20);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().message == "/dev/zero: larger than 1048576 bytes, not read");
}

TEST_CASE("write_file_atomically lands the bytes and leaves no temporary file") {
  testing::TempDir dir;
  const auto path = (dir.path() / "state.json").string();
  REQUIRE(util::write_file_atomically(path, "first").ok());
  CHECK(*util::read_file(path, 100) == "first");
  REQUIRE(util::write_file_atomically(path, "second, longer").ok());
  CHECK(*util::read_file(path, 100) == "second, longer");
  CHECK(files_in(dir.path()) == 1);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
}

TEST_CASE("a write that cannot happen is an error, leaves no temporary file and the old state") {
  testing::TempDir dir;
  // The directory does not exist: nothing can be created.
  auto r = util::write_file_atomically((dir.path() / "no" / "x").string(), "y");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("cannot create"));
  // The target is a non-empty directory: the rename fails (as root too, unlike permissions).
  const auto target = dir.path() / "state.json";
  fs::create_directory(target);
  testing::write_file(target / "keep", "kept");
  r = util::write_file_atomically(target.string(), "new");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message, Catch::Contains("cannot rename"));
  CHECK(files_in(dir.path()) == 1);  // the temporary file is gone
  CHECK(*util::read_file((target / "keep").string(), 100) == "kept");
}
