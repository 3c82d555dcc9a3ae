// Names the calling thread, as `top -H`, `ps -L` and perf show it, so that an
// operator can tell Kiln's threads apart (io, push, commit, slot, ...).
// Linux keeps at most 15 bytes of a name; longer ones are cut. Any thread
// may call it, once, as the first thing it does.
#pragma once

#include <pthread.h>

#include <string>

namespace kiln {

inline void NameThisThread(std::string name) {
  if (name.size() > 15) name.resize(15);
  pthread_setname_np(pthread_self(), name.c_str());
}

}  // namespace kiln
