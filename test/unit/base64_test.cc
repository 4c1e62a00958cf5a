#include "tollgate/util/base64.h"

#include <catch2/catch.hpp>

using namespace tollgate::util;

TEST_CASE("base64 round-trips every length and byte value") {
  std::string bytes;
  for (int i = 0; i < 300; ++i) {
    INFO(i);
    const std::string enc = encode_base64(bytes);
    CHECK(enc.size() == 4 * ((bytes.size() + 2) / 3));
    auto dec = decode_base64(enc);
    REQUIRE(dec.ok());
    CHECK(*dec == bytes);
    bytes.push_back(static_cast<char>(i * 7));
  }
  CHECK(encode_base64("foobar") == "Zm9vYmFy");
  CHECK(encode_base64("fo") == "Zm8=");
}

TEST_CASE("base64 decoding is strict about alphabet, length and padding, and skips line breaks") {
  CHECK(*decode_base64("") == "");
  CHECK(*decode_base64("Zg==") == "f");
  CHECK(*decode_base64("Zm8=") == "fo");
  CHECK(*decode_base64("Zm9v\nYmFy\r\n") == "foobar");
  CHECK(decode_base64("Zm9").error().message ==
        "not valid base64: length 3 is not a multiple of 4");
  CHECK(decode_base64("Zm9v Zg==").error().message ==
        "not valid base64: length 9 is not a multiple of 4");
  CHECK(decode_base64("Zm9v Zg=").error().message ==
        "not valid base64: unexpected character at offset 4");
  CHECK_FALSE(decode_base64("Z===").ok());      // three pads
  CHECK_FALSE(decode_base64("Zg=a").ok());      // data after padding
  CHECK_FALSE(decode_base64("=Zg=").ok());      // padding first
  CHECK_FALSE(decode_base64("Zg==Zg==").ok());  // padding in the middle
  CHECK_FALSE(decode_base64("Zm9v-_==").ok());  // URL-safe alphabet is not standard base64
}
