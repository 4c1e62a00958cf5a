#include "tollgate/util/base64.h"

#include <openssl/evp.h>

namespace tollgate::util {
namespace {

bool in_alphabet(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

}  // namespace

std::string encode_base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

Result<std::string> decode_base64(std::string_view text) {
  std::string in;
  in.reserve(text.size());
  for (const char c : text) {
    if (c != '\n' && c != '\r') in.push_back(c);
  }
  if (in.size() % 4 != 0) {
    return make_error("not valid base64: length " + std::to_string(in.size()) +
                      " is not a multiple of 4");
  }
  // EVP_DecodeBlock accepts more than base64 (leading spaces, '=' anywhere): check first.
  std::size_t pad = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const bool padding =
        in[i] == '=' && i + 2 >= in.size() && (i + 1 == in.size() || in[i + 1] == '=');
    if (padding) {
      ++pad;
    } else if (!in_alphabet(in[i]) || pad > 0) {
      return make_error("not valid base64: unexpected character at offset " + std::to_string(i));
    }
  }
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return make_error("not valid base64");
  out.resize(static_cast<std::size_t>(n) - pad);  // EVP_DecodeBlock counts padding as zeros
  return out;
}

}  // namespace tollgate::util
