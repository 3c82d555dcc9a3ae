#include "runner/container_spec.h"

#include <rapidjson/prettywriter.h>
#include <rapidjson/stringbuffer.h>

#include <algorithm>
#include <optional>

namespace kiln::runner {
namespace {

using Writer = rapidjson::PrettyWriter<rapidjson::StringBuffer>;

// Capabilities a task keeps: enough for package-manager style file work as
// root inside its own root filesystem, nothing that reaches the host.
const char* const kCapabilities[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL",  "CAP_SETGID",       "CAP_SETUID", "CAP_NET_BIND_SERVICE"};

// Syscalls refused with EPERM, on top of what the capabilities forbid.
const char* const kDeniedSyscalls[] = {"acct",
                                       "add_key",
                                       "bpf",
                                       "clock_adjtime",
                                       "clock_settime",
                                       "create_module",
                                       "delete_module",
                                       "fanotify_init",
                                       "finit_module",
                                       "fsconfig",
                                       "fsmount",
                                       "fsopen",
                                       "io_uring_enter",
                                       "io_uring_register",
                                       "io_uring_setup",
                                       "init_module",
                                       "inotify_init",
                                       "inotify_init1",
                                       "ioperm",
                                       "iopl",
                                       "kexec_file_load",
                                       "kexec_load",
                                       "keyctl",
                                       "lookup_dcookie",
                                       "mount",
                                       "move_mount",
                                       "name_to_handle_at",
                                       "open_by_handle_at",
                                       "open_tree",
                                       "perf_event_open",
                                       "pivot_root",
                                       "process_vm_readv",
                                       "process_vm_writev",
                                       "ptrace",
                                       "quotactl",
                                       "reboot",
                                       "request_key",
                                       "setns",
                                       "settimeofday",
                                       "swapoff",
                                       "swapon",
                                       "syslog",
                                       "umount2",
                                       "unshare",
                                       "userfaultfd",
                                       "vhangup"};

// CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
constexpr uint64_t kNamespaceCloneFlags[] = {0x00020000, 0x02000000, 0x04000000, 0x08000000,
                                             0x10000000, 0x20000000, 0x40000000};

const char* const kMaskedPaths[] = {"/proc/acpi",
                                    "/proc/asound",
                                    "/proc/kcore",
                                    "/proc/keys",
                                    "/proc/latency_stats",
                                    "/proc/timer_list",
                                    "/proc/timer_stats",
                                    "/proc/sched_debug",
                                    "/proc/scsi",
                                    "/sys/firmware",
                                    "/sys/devices/virtual/powercap"};
const char* const kReadonlyPaths[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                      "/proc/sysrq-trigger"};

void Str(Writer& w, const std::string& s) {
  w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

template <typename List>
void Strings(Writer& w, const List& list) {
  w.StartArray();
  for (const auto& s : list) w.String(s);
  w.EndArray();
}

// A seccomp rule: the calls `names` fail with `errno_ret`, when given, only
// if their argument passes `test`.
struct ArgTest {
  unsigned index;
  uint64_t value, value_two;
  const char* op;
};
// A rule with `tests` holds when all of them do.
template <typename List>
void ErrnoRule(Writer& w, const List& names, unsigned errno_ret,
               std::initializer_list<ArgTest> tests = {}) {
  w.StartObject();
  w.Key("names");
  Strings(w, names);
  w.Key("action");
  w.String("SCMP_ACT_ERRNO");
  w.Key("errnoRet");
  w.Uint(errno_ret);
  if (tests.size()) {
    w.Key("args");
    w.StartArray();
    for (const auto& test : tests) {
      w.StartObject();
      w.Key("index");
      w.Uint(test.index);
      w.Key("value");
      w.Uint64(test.value);
      w.Key("valueTwo");
      w.Uint64(test.value_two);
      w.Key("op");
      w.String(test.op);
      w.EndObject();
    }
    w.EndArray();
  }
  w.EndObject();
}
void ErrnoRule(Writer& w, std::initializer_list<const char*> names, unsigned errno_ret,
               std::initializer_list<ArgTest> tests = {}) {
  ErrnoRule<std::initializer_list<const char*>>(w, names, errno_ret, tests);
}

void Mount(Writer& w, const char* dest, const char* type, const char* source,
           std::initializer_list<const char*> options) {
  w.StartObject();
  w.Key("destination");
  w.String(dest);
  w.Key("type");
  w.String(type);
  w.Key("source");
  w.String(source);
  w.Key("options");
  w.StartArray();
  for (const char* o : options) w.String(o);
  w.EndArray();
  w.EndObject();
}

}  // namespace

std::string BuildConfig(const ContainerSpec& spec) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("ociVersion");
  w.String("1.0.2");

  w.Key("process");
  w.StartObject();
  w.Key("terminal");
  w.Bool(false);
  w.Key("user");
  w.StartObject();
  w.Key("uid");
  w.Int(0);
  w.Key("gid");
  w.Int(0);
  w.EndObject();
  w.Key("args");
  w.StartArray();
  for (const auto& a : spec.args) Str(w, a);
  w.EndArray();
  w.Key("env");
  w.StartArray();
  // PATH and HOME unless the spec sets them (an image's own PATH); each
  // name once, its last value (execve's reader takes the first it meets).
  std::vector<std::pair<std::string, std::string>> env = {
      {"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, {"HOME", "/task"}};
  for (const auto& [k, v] : spec.env) {
    auto same = std::find_if(env.begin(), env.end(), [&](const auto& e) { return e.first == k; });
    if (same != env.end())
      same->second = v;
    else
      env.emplace_back(k, v);
  }
  for (const auto& [k, v] : env) Str(w, k + "=" + v);
  w.EndArray();
  w.Key("cwd");
  w.String(kTaskDirInContainer);
  w.Key("capabilities");
  w.StartObject();
  for (const char* set : {"bounding", "effective", "permitted"}) {
    w.Key(set);
    Strings(w, kCapabilities);
  }
  w.EndObject();
  w.Key("rlimits");
  w.StartArray();
  auto rlimit = [&](const char* type, uint64_t soft, uint64_t hard) {
    w.StartObject();
    w.Key("type");
    w.String(type);
    w.Key("hard");
    w.Uint64(hard);
    w.Key("soft");
    w.Uint64(soft);
    w.EndObject();
  };
  rlimit("RLIMIT_NOFILE", 1024, 4096);
  // No core dumps: 0 stops a dump to a file, and 1 (1 byte: no file either)
  // is what the kernel takes as "no dump" when core_pattern pipes to a
  // helper, which it would start as host root.
  rlimit("RLIMIT_CORE", 1, 1);
  if (spec.max_file_bytes > 0) {
    auto max = static_cast<uint64_t>(spec.max_file_bytes);
    rlimit("RLIMIT_FSIZE", max, max);
  }
  w.EndArray();
  w.Key("noNewPrivileges");
  w.Bool(true);
  // When the host runs out of memory, tasks go first, not Kiln or the host's
  // own services.
  w.Key("oomScoreAdj");
  w.Int(1000);
  w.EndObject();

  w.Key("root");
  w.StartObject();
  w.Key("path");
  w.String("rootfs");
  w.Key("readonly");
  w.Bool(false);  // the overlay's upper layer takes the writes; the image stays intact
  w.EndObject();
  w.Key("hostname");
  Str(w, spec.hostname);

  w.Key("mounts");
  w.StartArray();
  Mount(w, "/proc", "proc", "proc", {"nosuid", "noexec", "nodev"});
  Mount(w, "/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"});
  Mount(w, "/dev/pts", "devpts", "devpts",
        {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"});
  Mount(w, "/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"});
  Mount(w, "/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"});
  Mount(w, "/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"});
  Mount(w, "/tmp", "tmpfs", "tmpfs", {"nosuid", "nodev", "mode=1777", "size=262144k"});
  w.StartObject();
  w.Key("destination");
  w.String(kTaskDirInContainer);
  w.Key("type");
  w.String("bind");
  w.Key("source");
  Str(w, spec.task_dir);
  w.Key("options");
  w.StartArray();
  w.String("rbind");
  w.String("rw");
  w.String("nosuid");
  w.String("nodev");
  w.EndArray();
  w.EndObject();
  w.EndArray();

  w.Key("linux");
  w.StartObject();
  if (!spec.cgroups_path.empty()) {
    w.Key("cgroupsPath");
    Str(w, spec.cgroups_path);
  }
  w.Key("namespaces");
  w.StartArray();
  for (const char* ns : {"pid", "ipc", "uts", "mount"}) {
    w.StartObject();
    w.Key("type");
    w.String(ns);
    w.EndObject();
  }
  if (!spec.network) {
    w.StartObject();
    w.Key("type");
    w.String("network");
    w.EndObject();
  }
  w.EndArray();
  w.Key("resources");
  w.StartObject();
  w.Key("memory");
  w.StartObject();
  w.Key("limit");
  w.Int64(spec.memory_bytes);
  w.Key("swap");
  w.Int64(spec.memory_bytes);
  w.EndObject();
  w.Key("pids");
  w.StartObject();
  w.Key("limit");
  w.Int64(spec.pids);
  w.EndObject();
  w.Key("cpu");
  w.StartObject();
  w.Key("shares");
  w.Uint64(spec.cpu_shares);
  w.EndObject();
  w.Key("devices");
  w.StartArray();
  w.StartObject();
  w.Key("allow");
  w.Bool(false);
  w.Key("access");
  w.String("rwm");
  w.EndObject();
  w.EndArray();
  w.EndObject();
  w.Key("maskedPaths");
  Strings(w, kMaskedPaths);
  w.Key("readonlyPaths");
  Strings(w, kReadonlyPaths);
  w.Key("seccomp");
  w.StartObject();
  w.Key("defaultAction");
  w.String("SCMP_ACT_ALLOW");
  w.Key("architectures");
  Strings(w,
          std::initializer_list<const char*>{"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"});
  w.Key("syscalls");
  w.StartArray();
  ErrnoRule(w, kDeniedSyscalls, 1);  // EPERM
  // clone with a namespace flag: the way around the unshare refused above
  // (a new user namespace gives CAP_NET_ADMIN over a new network one, and
  // the kernel's attack surface with it). One rule per flag: a rule's
  // conditions all have to hold, and a masked compare tests equality.
  for (uint64_t flag : kNamespaceCloneFlags)
    ErrnoRule(w, {"clone"}, 1, {ArgTest{0, flag, flag, "SCMP_CMP_MASKED_EQ"}});  // arg 0: flags
  // AF_VSOCK reaches the hypervisor and its agents past a network
  // namespace: "network none" would not be.
  // The kernel reads the domain as an int: the upper 32 bits of the
  // register are masked off, or (1 << 32 | 40) would pass.
  ErrnoRule(w, {"socket"}, 1, {ArgTest{0, 0xffffffff, 40, "SCMP_CMP_MASKED_EQ"}});  // AF_VSOCK
  // RLIMIT_CORE (4) stays 1 (see the rlimits): lowered to 0, a crash would
  // start core_pattern's helper as host root. Reading it (prlimit64 with
  // no new limit) is allowed; glibc's setrlimit is prlimit64.
  ErrnoRule(w, {"setrlimit"}, 1, {ArgTest{0, 0xffffffff, 4, "SCMP_CMP_MASKED_EQ"}});
  ErrnoRule(w, {"prlimit64"}, 1,
            {ArgTest{1, 0xffffffff, 4, "SCMP_CMP_MASKED_EQ"}, ArgTest{2, 0, 0, "SCMP_CMP_NE"}});
  // fallocate reserves any number of blocks at once, between two looks of
  // the task dir's watch (and past RLIMIT_FSIZE with KEEP_SIZE): EOPNOTSUPP,
  // on which posix_fallocate falls back to writing, which the watch sees.
  ErrnoRule(w, {"fallocate"}, 95);
  // clone3 passes its flags in memory, out of seccomp's sight: ENOSYS, on
  // which libc falls back to clone.
  ErrnoRule(w, {"clone3"}, 38);
  w.EndArray();
  w.EndObject();
  w.EndObject();

  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

}  // namespace kiln::runner
