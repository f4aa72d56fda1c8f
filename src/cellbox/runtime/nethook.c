/* cellbox's OCI prestart hook: wire the network namespace runc has just made.
 *
 * Why a hook: with a user namespace per sandbox, the network namespace must belong to
 * the sandbox's user namespace, or CRIU cannot restore into it (criu #2651: "Can't
 * setns .../net: Operation not permitted"). So runc makes the netns itself, and runc
 * runs this hook, with the container's state (its init's PID) on stdin, both at
 * `runc run` and during `runc restore` (CRIU's setup-namespaces step, into the fresh
 * empty netns that runc's --empty-ns network gives every restore).
 *
 * Why C: the hook is on the create and restore paths; a shell hook cost ~56 ms of a
 * restore and a Python one ~300 ms, this one costs its two `ip -batch` runs.
 *
 * usage: nethook NETNS HOST_VETH MAC ADDR/PREFIX GATEWAY BRIDGE PORT_BATCH PING_RANGE NEIGH
 *        (state JSON on stdin)
 * It names the netns for the host (ip netns attach NETNS PID, replacing a stale one
 * left by a suspended incarnation), adds the veth pair with eth0 inside, puts the host
 * end on the bridge, pins the host's neighbour entry (NEIGH, an `ip -batch` line from
 * network/walls.py), runs PORT_BATCH through `bridge -batch` (the port's walls from
 * network/walls.py: isolated, no learning, one static FDB entry), sets eth0's address,
 * lo and the route, and writes net.ipv4.ping_group_range (PING_RANGE, in host gids:
 * runc writes the OCI sysctls at `run` but not at `restore`, and without CAP_NET_RAW
 * ping needs it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int run_batch(char *const argv[], const char *script) {
    int fds[2];
    if (pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[0], 0);
        close(fds[0]);
        close(fds[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[0]);
    size_t len = strlen(script);
    if (write(fds[1], script, len) != (ssize_t)len) { close(fds[1]); return -1; }
    close(fds[1]);
    int status;
    if (waitpid(pid, &status, 0) < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: %s NETNS HOST_VETH MAC ADDR/PREFIX GATEWAY BRIDGE PORT_BATCH PING_RANGE NEIGH"
                        " < state.json\n", argv[0]);
        return 2;
    }
    const char *ns = argv[1], *veth = argv[2], *mac = argv[3], *addr = argv[4], *gw = argv[5], *br = argv[6];
    const char *port_batch = argv[7], *ping_range = argv[8], *neigh = argv[9];
    char state[65536];
    size_t n = fread(state, 1, sizeof state - 1, stdin);
    state[n] = 0;
    char *p = strstr(state, "\"pid\":");
    long pid = p ? strtol(p + 6, NULL, 10) : 0;
    if (pid <= 0) {
        fprintf(stderr, "nethook: no pid in the container state\n");
        return 1;
    }
    char path[256], script[2048], sysnet[256];
    /* A netns of the same name is the previous incarnation's (a suspend keeps it);
     * drop its host veth (first: freeing the netns would delete it behind our back)
     * and its name, so this one can take both. */
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    snprintf(sysnet, sizeof sysnet, "/sys/class/net/%s", veth);
    struct stat st;
    int stale_veth = stat(sysnet, &st) == 0, stale_ns = stat(path, &st) == 0;
    snprintf(script, sizeof script,
             "%s%s%s%s%s%s"
             "netns attach %s %ld\n"
             "link add %s type veth peer name eth0 address %s netns %s\n"
             "link set %s master %s up\n"
             "%s",
             stale_veth ? "link del " : "", stale_veth ? veth : "", stale_veth ? "\n" : "",
             stale_ns ? "netns del " : "", stale_ns ? ns : "", stale_ns ? "\n" : "",
             ns, pid, veth, mac, ns, veth, br, neigh);
    char *host_argv[] = {"ip", "-batch", "-", NULL};
    if (run_batch(host_argv, script) != 0) {
        fprintf(stderr, "nethook: host side of %s failed\n", ns);
        return 1;
    }
    /* The port's walls before the sandbox's first frame (its tasks are frozen in runc's
     * setup until the hooks return). */
    char *br_argv[] = {"bridge", "-batch", "-", NULL};
    if (run_batch(br_argv, port_batch) != 0) {
        fprintf(stderr, "nethook: bridge port of %s failed\n", ns);
        return 1;
    }
    snprintf(script, sizeof script,
             "addr add %s dev eth0\nlink set eth0 up\nlink set lo up\nroute add default via %s\n", addr, gw);
    char *ns_argv[] = {"ip", "-n", (char *)ns, "-batch", "-", NULL};
    if (run_batch(ns_argv, script) != 0) {
        fprintf(stderr, "nethook: sandbox side of %s failed\n", ns);
        return 1;
    }
    /* /proc/sys/net shows the netns of the task that opens it: join the sandbox's (this
     * process is single-threaded and exits right after). */
    snprintf(path, sizeof path, "/proc/%ld/ns/net", pid);
    int nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) != 0) {
        fprintf(stderr, "nethook: cannot enter the netns of %s: %s\n", ns, strerror(errno));
        return 1;
    }
    close(nsfd);
    int sysctl = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY | O_CLOEXEC);
    size_t rlen = strlen(ping_range);
    if (sysctl < 0 || write(sysctl, ping_range, rlen) != (ssize_t)rlen) {
        fprintf(stderr, "nethook: ping_group_range of %s: %s\n", ns, strerror(errno));
        return 1;
    }
    close(sysctl);
    return 0;
}
