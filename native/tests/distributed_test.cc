// The trainer's process group on a device (`distributed_test -- <device> <world size>`): Gloo on the CPU, NCCL on a
// GPU. Every rank runs the three collectives the trainer uses (broadcast of the initial weights, the bucketed
// gradient average with the host-side loss/stop pair, the all-gather of bank entries) on tensors that differ per
// rank, and checks what comes back. World size 2 forks the second rank before any torch work in this process.
// NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): with one GPU that case is a skip saying so.
#include <ATen/ATen.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "check.h"
#include "train/distributed.h"

namespace m2vla::test {
namespace {

// One rank's collectives; "" when every result is right, else what went wrong.
std::string run_rank(const c10::Device& device, int rank, int world, int port) {
  try {
    // Asked in each rank: the CUDA driver must not be initialized before the fork.
    if (device.is_cuda() && !at::hasCUDA()) return "skip: no CUDA device on this machine";
    train::DistributedOptions o;
    o.device = device, o.rank = rank, o.world_size = world, o.master_port = port;
    o.timeout = std::chrono::seconds(60);
    o.bucket_bytes = 64;  // several buckets for the 40 floats below
    train::ProcessGroup group(o);
    const auto on = at::TensorOptions().device(device);
    const double r = rank, mean_rank = (world - 1) / 2.0;

    std::vector<at::Tensor> weights{at::full({3, 4}, r + 1, on), at::full({5}, 10 * (r + 1), on)};
    group.broadcast(weights);
    if (!weights[0].eq(1).all().item<bool>() || !weights[1].eq(10).all().item<bool>())
      return "broadcast: the ranks do not hold rank 0's weights";

    at::Tensor ramp = at::arange(40, on.dtype(at::kFloat)).view({8, 5});
    std::vector<at::Tensor> grads{ramp + r, at::full({7}, 2 * r, on),
                                  at::tensor({r, rank == world - 1 ? 1.0 : 0.0}, at::kDouble)};  // host: loss, stop
    group.average(grads);
    if ((grads[0] - (ramp + mean_rank)).abs().max().item<double>() > 1e-6 ||
        (grads[1] - 2 * mean_rank).abs().max().item<double>() > 1e-6)
      return "average: the gradients are not the mean over the ranks";
    if (!grads[2].device().is_cpu() || std::abs(grads[2][0].item<double>() - mean_rank) > 1e-12 ||
        !(grads[2][1].item<double>() > 0))
      return "average: the host loss/stop pair did not come back as the mean, on the host";

    at::Tensor rows = group.all_gather(at::full({2, 3}, r, on));
    at::Tensor want = at::arange(world, on.dtype(at::kFloat)).repeat_interleave(2).unsqueeze(1).expand({2 * world, 3});
    if (rows.device() != device || !rows.sizes().equals({2 * world, 3}) || !rows.eq(want).all().item<bool>())
      return "all_gather: the rows are not every rank's in rank order";
    std::printf("rank %d of %d on %s: broadcast, average (%s), all_gather ok\n", rank, world, device.str().c_str(),
                "bucketed, with the host pair");
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(collectives) {
  const std::string dev = args().size() > 0 ? args()[0] : "cpu";
  const int world = args().size() > 1 ? std::stoi(args()[1]) : 2;
  const c10::Device device(dev);
  if (!train::distributed_available(device))
    skip(std::string("this build has no ") + (device.is_cuda() ? "NCCL" : "Gloo") + " process group");
  const int port = 20000 + int(getpid() % 20000);
  int fds[2] = {-1, -1};
  pid_t child = -1;
  if (world == 2) {
    EXPECT(pipe(fds) == 0);
    child = fork();
    EXPECT(child >= 0);
    if (child == 0) {  // rank 1: its verdict goes through the pipe
      close(fds[0]);
      const std::string why = run_rank(device, 1, 2, port);
      std::fflush(stdout);  // _exit skips stdio's flush
      if (write(fds[1], why.data(), why.size()) < 0) _exit(2);
      _exit(why.empty() ? 0 : 1);
    }
    close(fds[1]);
  }
  const std::string mine = run_rank(device, 0, world, port);
  std::string theirs;
  if (child > 0) {
    char buf[4096];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) theirs.append(buf, size_t(n));
    int status = 0;
    waitpid(child, &status, 0);
    if (theirs.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) theirs = "rank 1 died";
  }
  for (const std::string& why : {mine, theirs}) {
    if (why.rfind("skip: ", 0) == 0) skip(why.substr(6));
    if (why.find("Duplicate GPU") != std::string::npos) skip("NCCL refuses two ranks on one GPU: " + why.substr(0, 300));
  }
  EXPECT_MSG(mine.empty(), "rank 0: ", mine);
  EXPECT_MSG(theirs.empty(), "rank 1: ", theirs);
}

}  // namespace
}  // namespace m2vla::test

TEST_MAIN()
