#pragma once
// `otter serve`'s HTTP side (cpp-httplib): the webui's /sdapi/v1 routes, OpenAI's images API,
// otter's asynchronous jobs with Server-Sent Events, /health, /metrics and the web page, over one
// GenerationService. Requests are checked before anything is queued (api_request.h); a client
// that disconnects from a blocking request has its job cancelled.
#include <memory>
#include <string>

#include "api_request.h"
#include "generation_service.h"

namespace httplib {
class Server;
}

namespace otter::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 7860;              // 0: any free port (port() says which)
  std::string api_key;          // "" = none; else every API route needs "Authorization: Bearer KEY"
  Limits limits;
  int threads = 16;             // connections served at once
};

class HttpServer {
 public:
  HttpServer(GenerationService& service, HttpOptions options);
  ~HttpServer();

  // Binds (throws otter::Error naming the address when it cannot); returns the port.
  int bind();
  int port() const { return port_; }
  // Serves until stop(); call bind() first.
  void listen();
  void stop();

 private:
  void routes();

  GenerationService& service_;
  HttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::mutex webui_mutex_;
  std::string webui_model_;  // /sdapi/v1/options' sd_model_checkpoint ("" = the default)
};

}  // namespace otter::serve
