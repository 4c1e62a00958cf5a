#include "tollgate/util/x509.h"

#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string_view>

namespace tollgate::util {
namespace {

constexpr std::string_view kSpiffe = "spiffe://";

struct GeneralNamesFree {
  void operator()(GENERAL_NAMES* n) const { GENERAL_NAMES_free(n); }
};

}  // namespace

std::optional<std::string> spiffe_principal(X509* cert) {
  if (cert == nullptr) return std::nullopt;
  std::unique_ptr<GENERAL_NAMES, GeneralNamesFree> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (!names) return std::nullopt;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names.get(), i);
    if (n->type != GEN_URI) continue;
    const ASN1_STRING* uri = n->d.uniformResourceIdentifier;
    const std::string_view v(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                             static_cast<std::size_t>(ASN1_STRING_length(uri)));
    if (v.starts_with(kSpiffe) && v.size() > kSpiffe.size()) {
      return std::string(v.substr(kSpiffe.size()));
    }
  }
  return std::nullopt;
}

}  // namespace tollgate::util
