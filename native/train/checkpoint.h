// Files a training run writes.
//
// Checkpoint (exact resume), one directory per saved step under <root>:
//   step-NNNNNNNN/action_head.safetensors        the head in the reference's names, with the MSM bank and the
//                                                tensors the head does not train (k_memory, v_memory, film_gen)
//                 proprio_projector.safetensors  fc1.*, fc2.*
//                 action_queries.safetensors     action_queries.weight (float32)
//                 optimizer.safetensors          AdamW moments and steps per parameter, `step`, `generator`
//                 trainer_state.json             what lib/train.ts needs to resume (loader position, options)
// written as step-NNNNNNNN.tmp and renamed when complete; then <root>/latest (the directory's name) is replaced
// atomically and older step directories are removed. A crash leaves either the previous checkpoint or the new one.
//
// Exported run directory (what loadHead / loadPolicy read, next to the configuration files lib/train.ts copies):
//   model.safetensors (the VLM with the trained action queries), action_head.safetensors,
//   proprio_projector.safetensors, and the same two state dicts as torch.save files in the reference's layout,
//   action_head--checkpoint.pt and proprio_projector--checkpoint.pt (torch.load(..., weights_only=True) reads them).
#pragma once
#include <string>

#include "train/trainer.h"

namespace m2vla::train {

// Returns the step directory written.
std::string save_checkpoint(const Trainer& trainer, const std::string& root, const std::string& state_json);

// The TrainerOptions paths that resume from a step directory.
void resume_from(TrainerOptions& options, const std::string& step_dir);

void export_run(const Trainer& trainer, const std::string& dir);

}  // namespace m2vla::train
