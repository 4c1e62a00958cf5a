// The Prometheus text exposition format (version 0.0.4), for metrics written by hand: the
// agent's, and the controller's beside prometheus-cpp's. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace tollgate::util {

// "# HELP <name> <help>\n# TYPE <name> <type>\n".
void append_metric_header(std::string& out, std::string_view name, std::string_view type,
                          std::string_view help);

}  // namespace tollgate::util
