// A tiny test harness for the C++ tests (no framework to install): TEST(name) { ... } registers a case; EXPECT(cond)
// and EXPECT_MSG(cond, parts...) fail it with the file, line and message; skip("why") skips it. main() runs every case
// (or those named on the command line), prints one line per case and exits 0 (all passed), 1 (a failure) or 77
// (everything skipped: CTest's SKIP_RETURN_CODE). A test executable's own arguments come after "--".
#pragma once
#include <c10/util/Exception.h>

#include <cstdio>
#include <algorithm>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.h"

namespace m2vla::test {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Skipped : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Case {
  std::string name;
  std::function<void()> body;
};

inline std::vector<Case>& cases() {
  static std::vector<Case> all;
  return all;
}

struct Registrar {
  Registrar(const char* name, std::function<void()> body) { cases().push_back({name, std::move(body)}); }
};

// Arguments after "--" on the command line (e.g. the device a test runs on).
inline std::vector<std::string>& args() {
  static std::vector<std::string> a;
  return a;
}

[[noreturn]] inline void skip(const std::string& why) { throw Skipped(why); }

template <typename... Parts>
[[noreturn]] void failed(const char* file, int line, const char* expr, const Parts&... parts) {
  std::ostringstream os;
  os << file << ":" << line << ": EXPECT(" << expr << ") failed";
  if constexpr (sizeof...(parts) > 0) {
    os << ": ";
    (os << ... << parts);
  }
  throw Failure(os.str());
}

inline int run_all(int argc, char** argv) {
  std::vector<std::string> only;
  bool rest = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (rest) args().push_back(a);
    else if (a == "--") rest = true;
    else only.push_back(a);
  }
  int passed = 0, failures = 0, skips = 0;
  for (const Case& c : cases()) {
    if (!only.empty() && std::find(only.begin(), only.end(), c.name) == only.end()) continue;
    std::string why;
    try {
      c.body();
      std::printf("[ ok   ] %s\n", c.name.c_str());
      ++passed;
      continue;
    } catch (const Skipped& e) {
      std::printf("[ skip ] %s: %s\n", c.name.c_str(), e.what());
      ++skips;
      continue;
    } catch (const Failure& e) {
      why = e.what();
    } catch (const c10::Error& e) {
      why = std::string("libtorch error: ") + e.what_without_backtrace();
    } catch (const m2vla::Error& e) {
      why = std::string(error_code_name(e.code())) + ": " + e.what();
    } catch (const std::exception& e) {
      why = std::string("exception: ") + e.what();
    }
    std::printf("[ FAIL ] %s: %s\n", c.name.c_str(), why.c_str());
    std::fflush(stdout);
    ++failures;
  }
  std::printf("%d passed, %d failed, %d skipped\n", passed, failures, skips);
  if (failures) return 1;
  return passed == 0 && skips > 0 ? 77 : 0;
}

}  // namespace m2vla::test

#define M2VLA_CAT2(a, b) a##b
#define M2VLA_CAT(a, b) M2VLA_CAT2(a, b)
#define TEST(name)                                                                              \
  static void name();                                                                           \
  static const ::m2vla::test::Registrar M2VLA_CAT(name, _registrar)(#name, name);               \
  static void name()
#define EXPECT(cond) \
  do {              \
    if (!(cond)) ::m2vla::test::failed(__FILE__, __LINE__, #cond); \
  } while (0)
#define EXPECT_MSG(cond, ...) \
  do {                       \
    if (!(cond)) ::m2vla::test::failed(__FILE__, __LINE__, #cond, __VA_ARGS__); \
  } while (0)
#define TEST_MAIN() \
  int main(int argc, char** argv) { return ::m2vla::test::run_all(argc, argv); }
