#include "tollgate/agent/identity.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <array>
#include <functional>
#include <memory>
#include <vector>

#include "tollgate/util/base64.h"
#include "tollgate/util/strings.h"
#include "tollgate/util/x509.h"

namespace tollgate::agent {
namespace {

constexpr std::string_view kSpiffe = "spiffe://";

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

X509Ptr from_pem(std::string_view pem) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

X509Ptr from_der(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  // Trailing bytes after the certificate are not a certificate we understand.
  if (cert && p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) return nullptr;
  return cert;
}

}  // namespace

util::Result<std::string> url_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    const int hi = i + 2 < s.size() ? util::hex_digit(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? util::hex_digit(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return util::make_error("malformed %-escape at offset " + std::to_string(i));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

namespace {

util::Result<std::optional<std::string>> parse_client_cert(std::string_view value) {
  value = util::trim(value);
  if (value.empty()) return std::optional<std::string>();  // the proxy saw no certificate
  TOLLGATE_TRY(text, url_unescape(value));
  X509Ptr cert;
  if (text.find("-----BEGIN") != std::string::npos) {
    cert = from_pem(text);
  } else {
    // Base64 DER; a chain is comma-separated, the client's certificate first.
    std::string first(util::trim(std::string_view(text).substr(0, text.find(','))));
    std::erase_if(first, [](char c) { return c == ' ' || c == '\t'; });
    auto der = util::decode_base64(first);
    if (!der.ok()) return util::make_error("the certificate is neither PEM nor base64 DER");
    cert = from_der(*der);
  }
  if (!cert) return util::make_error("the certificate cannot be parsed");
  return util::spiffe_principal(cert.get());
}

// A proxy sends the same certificate with every request of a client, and decoding it is most
// of a decision's cost (OpenSSL 3's d2i_X509 takes ~100-200 us; the rest of a decision ~2 us).
// Each thread remembers the outcome for the last values it saw, in slots chosen by hash; a
// slot is reused only for an identical value, so the answer is the one parsing would give.
struct CertMemo {
  static constexpr std::size_t kSlots = 64;
  static constexpr std::size_t kMaxValue = 8192;  // a leaf certificate is ~1-2 KB escaped
  struct Slot {
    std::string value;
    std::optional<util::Result<std::optional<std::string>>> outcome;
  };
  std::array<Slot, kSlots> slots;
};

}  // namespace

util::Result<std::optional<std::string>> principal_from_client_cert(std::string_view value) {
  if (value.size() > CertMemo::kMaxValue) return parse_client_cert(value);
  thread_local CertMemo memo;
  CertMemo::Slot& slot = memo.slots[std::hash<std::string_view>{}(value) % CertMemo::kSlots];
  if (slot.outcome && slot.value == value) return *slot.outcome;
  slot.value.assign(value);
  slot.outcome = parse_client_cert(value);
  return *slot.outcome;
}

util::Result<std::optional<std::string>> principal_from_xfcc(std::string_view value) {
  // Split into elements (',') and pairs (';') outside double quotes; \" escapes a quote.
  std::vector<std::vector<std::pair<std::string, std::string>>> elements(1);
  std::string key, val;
  bool in_value = false, quoted = false;
  auto end_pair = [&] {
    if (!util::trim(key).empty()) {
      elements.back().emplace_back(util::lowered(util::trim(key)), std::string(util::trim(val)));
    }
    key.clear();
    val.clear();
    in_value = false;
  };
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (quoted) {
      if (c == '\\' && i + 1 < value.size()) {
        val.push_back(value[++i]);
      } else if (c == '"') {
        quoted = false;
      } else {
        val.push_back(c);
      }
    } else if (c == '"' && in_value) {
      quoted = true;
    } else if (c == '=' && !in_value) {
      in_value = true;
    } else if (c == ';') {
      end_pair();
    } else if (c == ',') {
      end_pair();
      elements.emplace_back();
    } else {
      (in_value ? val : key).push_back(c);
    }
  }
  if (quoted) return util::make_error("X-Forwarded-Client-Cert has an unterminated quote");
  end_pair();
  for (const auto& [k, v] : elements.back()) {
    if (k == "uri" && v.starts_with(kSpiffe) && v.size() > kSpiffe.size()) {
      return std::optional<std::string>(v.substr(kSpiffe.size()));
    }
  }
  return std::optional<std::string>();
}

}  // namespace tollgate::agent
