#include "tollgate/http/message.h"

#include "tollgate/util/json_text.h"

namespace tollgate::http {

Response error_response(int status, std::string_view message) {
  Response r;
  r.status = status;
  r.body = "{\"error\":";
  util::append_json_string(r.body, message);
  r.body += "}";
  return r;
}

}  // namespace tollgate::http
