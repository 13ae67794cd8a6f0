// Package ns dumps and restores what lives in a container's namespaces
// besides its processes: the mount tree (mountinfo, with the content of
// tmpfs mounts and each mount's propagation), the UTS names, SysV IPC
// objects, POSIX message queues, and the loopback device and veth
// pairs with their addresses and routes.
//
// It never traces a task. Dumping reads /proc/PID/mountinfo, walks files
// through /proc/PID/root, and enters a namespace on a locked OS thread
// where that is needed. Restoring runs mount and pivot_root as syscalls
// of the restored root task through the Syscaller the engine hands it.
//
// Images (CRIU's formats, in the checkpoint's image directory):
//
//	mountpoints-1.img        MntEntry per mount, in mount order
//	tmpfs-dev-N.tar.gz.img   content of the tmpfs with mount id N
//	utsns-1.img              UtsnsEntry
//	ipcns-{shm,sem,msg}-1.img  SysV objects with their content
//	posix-mq.json            POSIX message queues (not CRIU's: see mqueue.go)
//	netdev-1.img             NetDeviceEntry of lo and of each veth end (netdev.go)
//	ifaddr-1.img             their addresses, raw as `ip addr save` writes them (net.go)
//	route-1.img, route6-1.img  main-table routes, raw as `ip route save` writes them
//
// A namespace that a task below the root has of its own (nested.go,
// nested_mounts.go) has the same images with its inode number as ID
// (utsns-ID, ipcns-*-ID, posix-mq-ID.json, netdev-ID, ifaddr-ID, route-ID,
// mountpoints-ID, with the tmpfs-dev-N of the tmpfs mounts only it has);
// the engine records the same ID in each task's core. A plain process
// tree (not a container) has the same: its root's own UTS, IPC and
// network namespaces under ID 1 (DumpTreeOwn), and, when a task has a
// mount namespace of its own, the root's table (ctcr's) as
// mountpoints-1.img, from which the nested one is replayed.
package ns

// Syscaller runs syscalls in the root task of a restored tree (the
// engine's criu.RootTask): strings and byte slices are copied into the
// task and passed by address.
type Syscaller interface {
	Call(nr uintptr, args ...any) (uint64, error)
}
