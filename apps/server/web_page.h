#pragma once
// The web page otter serve shows at `/`: one HTML file (apps/server/web/index.html, no CDN, no
// network) compiled into the binary.
#include <string>

namespace otter::serve {

const std::string& web_page_html();

}  // namespace otter::serve
