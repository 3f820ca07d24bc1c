// Errors thrown by model and I/O code. They carry a code that lib/errors.ts maps to a typed JS error class;
// the message names the input that was wrong and what was expected. No N-API here.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace m2vla {

enum class ErrorCode { Input, Shape, Checkpoint, Config, Disposed, Native, Distributed };

inline const char* error_code_name(ErrorCode c) {
  switch (c) {
    case ErrorCode::Input: return "E_INPUT";
    case ErrorCode::Shape: return "E_SHAPE";
    case ErrorCode::Checkpoint: return "E_CHECKPOINT";
    case ErrorCode::Config: return "E_CONFIG";
    case ErrorCode::Disposed: return "E_DISPOSED";
    case ErrorCode::Native: return "E_NATIVE";
    case ErrorCode::Distributed: return "E_DISTRIBUTED";
  }
  return "E_NATIVE";
}

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, std::string message) : std::runtime_error(std::move(message)), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// fail(ErrorCode::Shape, "pixelValues: expected [", c, ", ", h, "] but got ", ...) — concatenates with <<.
template <typename... Parts>
[[noreturn]] void fail(ErrorCode code, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(code, os.str());
}

}  // namespace m2vla
