# Sourced by the tests/cluster scripts: names, addresses and paths of one
# test cluster, derived from its state dir (CLUSTER_DIR). Defines no traps.
# shellcheck shell=bash

CLUSTER_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$CLUSTER_HERE/../.." && pwd)
CP=$ROOT/tests/control-plane
BIN=${CONTROL_PLANE_BIN:-$ROOT/target/control-plane/bin}
IMAGES=${CLUSTER_IMAGES:-$ROOT/target/image}
STATE=${CLUSTER_DIR:-$ROOT/target/cluster/run}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
PKI=$STATE/pki
NODE=$STATE/node
KUBECONFIG_PATH=$STATE/admin.kubeconfig

# One short id per state dir: names of the cgroups and the host veth.
CLUSTER_ID=$(printf '%s' "$STATE" | sha256sum | cut -c1-6)
CGROUP_NAME=wr-cluster-$CLUSTER_ID   # created in every cgroup v1 hierarchy (kubelet cgroupRoot)
VETH_HOST=wrc$CLUSTER_ID             # host end of the host <-> node veth pair
VETH_PEER=wrc${CLUSTER_ID}n          # node end before it moves into the node netns as eth0

# Addresses (a second cluster on the same machine needs other ones).
HOST_IP=${CLUSTER_HOST_IP:-10.200.0.1}       # host end of the veth: kube-apiserver, host servers
NODE_IP=${CLUSTER_NODE_IP:-10.200.0.2}       # node end (eth0 in the node netns): kubelet, node IP
VETH_PREFIX=30
POD_CIDR=${CLUSTER_POD_CIDR:-10.244.0.0/16}  # --cluster-cidr; the node gets the first /24
NODE_POD_CIDR=${CLUSTER_NODE_POD_CIDR:-10.244.0.0/24}
NODE_POD_GATEWAY=${CLUSTER_NODE_POD_GATEWAY:-10.244.0.1}
SERVICE_CIDR=${CLUSTER_SERVICE_CIDR:-10.96.0.0/12}
SERVICE_IP=${CLUSTER_SERVICE_IP:-10.96.0.1}  # the `kubernetes` Service
NODE_NAME=${CLUSTER_NODE_NAME:-wr-node}
IMAGE_TAG=${IMAGE_TAG:-dev}

CONTAINERD_SOCK=$NODE/containerd.sock
V1_HIERARCHIES=()
for _h in /sys/fs/cgroup/*; do
  [[ -d $_h && $(stat -f -c %T "$_h" 2>/dev/null) == cgroupfs ]] && V1_HIERARCHIES+=("$_h")
done
# cgroup2 mounted beside v1 ("hybrid"): runc may create our paths there too.
CGROUP2_HYBRID=
if [[ -d /sys/fs/cgroup/unified && $(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null) == cgroup2fs ]]; then
  CGROUP2_HYBRID=/sys/fs/cgroup/unified
fi
unset _h

# The kubelet's kernel tunables (pkg/kubelet/cm setupKernelTunables): inside the
# node's mount namespace files holding these values cover /proc/sys/..., so it
# finds them set and writes nothing to the host.
KUBELET_SYSCTLS=(vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000)

alive() { # name -> the pid file names a live process
  local pid
  [[ -f $STATE/$1.pid ]] || return 1
  pid=$(<"$STATE/$1.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

node_pid() { # pid of the process holding the node's namespaces
  alive node && cat "$STATE/node.pid"
}
