#include "train/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc >= 2.28)

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "error.h"
#include "io/write.h"

namespace m2vla::train {
namespace fs = std::filesystem;
namespace {

void make_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(ErrorCode::Checkpoint, dir.string(), ": cannot create (", ec.message(), ")");
}

void remove_tree(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) fail(ErrorCode::Checkpoint, dir.string(), ": cannot remove (", ec.message(), ")");
}

// Puts the finished `tmp` at `dir` so that a valid checkpoint exists at every instant. A new step is a plain rename;
// the same step saved again (a resume that stopped before its first step) swaps the two directories atomically and
// only then removes the old one, now at `tmp`. Without RENAME_EXCHANGE (an old kernel or filesystem) the old one
// moves aside first, leaving "<dir>.old", which resume falls back to.
void move_into_place(const fs::path& tmp, const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir)) {
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) return remove_tree(tmp);
    if (errno != EINVAL && errno != ENOSYS)
      fail(ErrorCode::Checkpoint, dir.string(), ": cannot swap the new checkpoint in (", std::strerror(errno), ")");
    const fs::path old = dir.string() + ".old";
    remove_tree(old);
    fs::rename(dir, old, ec);
    if (ec) fail(ErrorCode::Checkpoint, dir.string(), ": cannot move the old checkpoint aside (", ec.message(), ")");
    fs::rename(tmp, dir, ec);
    if (ec) fail(ErrorCode::Checkpoint, dir.string(), ": cannot move the new checkpoint in place (", ec.message(), ")");
    return remove_tree(old);
  }
  fs::rename(tmp, dir, ec);
  if (ec) fail(ErrorCode::Checkpoint, dir.string(), ": cannot move the new checkpoint in place (", ec.message(), ")");
}

}  // namespace

std::string save_checkpoint(const Trainer& trainer, const std::string& root_path, const std::string& state_json) {
  const fs::path root(root_path);
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(trainer.steps_done()));
  const fs::path dir = root / name, tmp = root / (std::string(name) + ".tmp");
  make_directory(root);
  remove_tree(tmp);  // a save interrupted earlier
  make_directory(tmp);
  io::write_safetensors((tmp / "action_head.safetensors").string(), trainer.action_head_state_dict());
  io::write_safetensors((tmp / "proprio_projector.safetensors").string(), trainer.proprio_state_dict());
  io::write_safetensors((tmp / "action_queries.safetensors").string(), trainer.action_queries_state_dict());
  io::write_safetensors((tmp / "optimizer.safetensors").string(), trainer.training_state());
  io::write_text((tmp / "trainer_state.json").string(), state_json);
  io::sync_directory(tmp.string());
  move_into_place(tmp, dir);
  io::sync_directory(root.string());
  io::write_text((root / "latest").string(), std::string(name) + "\n");
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string other = entry.path().filename().string();
    if (entry.is_directory() && other.rfind("step-", 0) == 0 && other != name) remove_tree(entry.path());
  }
  return dir.string();
}

void resume_from(TrainerOptions& options, const std::string& step_dir) {
  const fs::path dir(step_dir);
  options.action_head_path = (dir / "action_head.safetensors").string();
  options.proprio_path = (dir / "proprio_projector.safetensors").string();
  options.resume_action_queries_path = (dir / "action_queries.safetensors").string();
  options.resume_state_path = (dir / "optimizer.safetensors").string();
}

void export_run(const Trainer& trainer, const std::string& dir_path) {
  const fs::path dir(dir_path);
  make_directory(dir);
  io::write_safetensors((dir / "model.safetensors").string(), trainer.vlm_state_dict());
  const io::NamedTensors head = trainer.action_head_state_dict(), proprio = trainer.proprio_state_dict();
  io::write_safetensors((dir / "action_head.safetensors").string(), head);
  io::write_safetensors((dir / "proprio_projector.safetensors").string(), proprio);
  io::write_torch_zip((dir / "action_head--checkpoint.pt").string(), head);
  io::write_torch_zip((dir / "proprio_projector--checkpoint.pt").string(), proprio);
}

}  // namespace m2vla::train
