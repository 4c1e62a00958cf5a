// Standard base64 (RFC 4648 section 4, with padding) over OpenSSL's EVP_EncodeBlock and
// EVP_DecodeBlock. Pure functions; thread-safe. Library tollgate_base64 (it links OpenSSL,
// which the core modules must not).
#pragma once

#include <string>
#include <string_view>

#include "tollgate/util/result.h"

namespace tollgate::util {

std::string encode_base64(std::string_view bytes);

// Strict: the standard alphabet, length a multiple of 4, '=' only as final padding. Line
// breaks (CR, LF) are skipped, as Go's decoder skips them; any other character is an error
// naming its offset.
Result<std::string> decode_base64(std::string_view text);

}  // namespace tollgate::util
