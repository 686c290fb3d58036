// Test helper: runs `bmserve serve --demo` as a child process on 127.0.0.1 with free ports
// (--http-port 0 --grpc-port 0), reads the ports from its start-up log, and offers a tiny
// HTTP/1.1 POST client (raw socket, Connection: close) for cross-checking the HTTP API.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace bms::testing {

class ServeProcess {
 public:
  // Starts `bin serve --demo --http-port 0 --grpc-port 0 <extra_args>` and waits (up to 60 s)
  // until it logs both listening addresses. ok() tells whether that worked; log() has the output.
  ServeProcess(const std::string& bin, const std::vector<std::string>& extra_args);
  ~ServeProcess();  // SIGKILL if still running

  bool ok() const { return http_port_ > 0 && grpc_port_ > 0; }
  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }
  std::string grpc_target() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string log();
  void Signal(int sig);
  // Waits for the process to exit (up to timeout_ms); returns its exit code, or -1 on timeout
  // or abnormal termination.
  int Wait(int timeout_ms);

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int http_port_ = 0;
  int grpc_port_ = 0;
  bool exited_ = false;
  std::mutex mu_;
  std::string log_;
  std::thread reader_;
};

// POSTs `body` (JSON) to 127.0.0.1:port; returns the response body ("" on a transport failure)
// and the status code in *status.
std::string HttpPostJson(int port, const std::string& path, const std::string& body, int* status);

}  // namespace bms::testing
