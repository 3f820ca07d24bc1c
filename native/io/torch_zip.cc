#include "error.h"
#include "io/state_dict.h"

namespace m2vla::io {
// Placeholder until the restricted torch.save reader lands (being written now).
StateDict load_torch_zip(const std::string& path) {
  fail(ErrorCode::Checkpoint, path, ": torch.save checkpoints are not supported by this build yet");
}
}  // namespace m2vla::io
