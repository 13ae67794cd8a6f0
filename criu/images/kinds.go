package images

import (
	"fmt"
	"strings"
)

// Head magics: the first word of every image except inventory.img and the
// raw pages images (CRIU criu/include/magic.h). CRIU picks the head from the
// image's open flags: O_SERVICE images (stats, irmap-cache) get
// MagicService, all others MagicCommon (criu/image.c head_magic).
const (
	MagicCommon  uint32 = 0x54564319 // IMG_COMMON_MAGIC
	MagicService uint32 = 0x55105940 // IMG_SERVICE_MAGIC
)

// ImagesV1_1 is the img_version inventory.img must carry. CRIU reads it to
// decide that every other image starts with a head magic; an older version
// (1) means bare magics, which this package neither writes nor reads.
const ImagesV1_1 = 2 // CRTOOLS_IMAGES_V1_1

// Prefix says which head word precedes an image's own magic.
type Prefix uint8

const (
	// PrefixCommon: MagicCommon, then the image magic. Almost every image.
	PrefixCommon Prefix = iota
	// PrefixService: MagicService, then the image magic (stats, irmap-cache).
	PrefixService
	// PrefixNone: the image magic alone. Only inventory.img, because CRIU
	// reads it before it knows whether the other images carry a head.
	PrefixNone
	// PrefixRaw: no magic and no entries at all (pages-N.img).
	PrefixRaw
)

// Kind names one image type: its CRIU magic name (what crit prints as
// "magic"), its file-name pattern, its magic and its head word. Kinds are
// values; the variables below are the only ones that make sense.
type Kind struct {
	Name   string // CRIU's name for the magic, e.g. "CORE"
	File   string // file name pattern: "core-%d.img"; one verb per id
	Magic  uint32 // the image magic (0 for raw images)
	Prefix Prefix // which head word precedes Magic
}

// The image kinds, with CRIU's magics (criu/include/magic.h) and file names
// (criu/image-desc.c imgset_template). CRIU formats ids with %u or %lu,
// ghost files and TCP streams with %x; %d and %x here print the same
// digits for the non-negative ids callers pass.
var (
	Inventory = Kind{"INVENTORY", "inventory.img", 0x58313116, PrefixNone}
	Pstree    = Kind{"PSTREE", "pstree.img", 0x50273030, PrefixCommon}
	Core      = Kind{"CORE", "core-%d.img", 0x55053847, PrefixCommon}
	Ids       = Kind{"IDS", "ids-%d.img", 0x54432030, PrefixCommon}
	Creds     = Kind{"CREDS", "creds-%d.img", 0x54023547, PrefixCommon}
	Mm        = Kind{"MM", "mm-%d.img", 0x57492820, PrefixCommon}
	Pagemap   = Kind{"PAGEMAP", "pagemap-%d.img", 0x56084025, PrefixCommon}
	// Pages is raw page data, addressed by PagemapHead.pages_id; it has
	// no header and is not read with Reader.
	Pages = Kind{"PAGES", "pages-%d.img", 0, PrefixRaw}
	Fs    = Kind{"FS", "fs-%d.img", 0x51403912, PrefixCommon}

	Files        = Kind{"FILES", "files.img", 0x56303138, PrefixCommon}
	Fdinfo       = Kind{"FDINFO", "fdinfo-%d.img", 0x56213732, PrefixCommon}
	RegFiles     = Kind{"REG_FILES", "reg-files.img", 0x50363636, PrefixCommon}
	Pipes        = Kind{"PIPES", "pipes.img", 0x56513555, PrefixCommon}
	PipesData    = Kind{"PIPES_DATA", "pipes-data.img", 0x56453709, PrefixCommon}
	Fifo         = Kind{"FIFO", "fifo.img", 0x58364939, PrefixCommon}
	FifoData     = Kind{"FIFO_DATA", "fifo-data.img", 0x59333054, PrefixCommon}
	UnixSk       = Kind{"UNIXSK", "unixsk.img", 0x54373943, PrefixCommon}
	InetSk       = Kind{"INETSK", "inetsk.img", 0x56443851, PrefixCommon}
	PacketSk     = Kind{"PACKETSK", "packetsk.img", 0x60454618, PrefixCommon}
	NetlinkSk    = Kind{"NETLINK_SK", "netlinksk.img", 0x58005614, PrefixCommon}
	SkQueues     = Kind{"SK_QUEUES", "sk-queues.img", 0x56264026, PrefixCommon}
	TCPStream    = Kind{"TCP_STREAM", "tcp-stream-%x.img", 0x51465506, PrefixCommon}
	Eventfd      = Kind{"EVENTFD_FILE", "eventfd.img", 0x44523722, PrefixCommon}
	Eventpoll    = Kind{"EVENTPOLL_FILE", "eventpoll.img", 0x45023858, PrefixCommon}
	EventpollTfd = Kind{"EVENTPOLL_TFD", "eventpoll-tfd.img", 0x44433746, PrefixCommon}
	Inotify      = Kind{"INOTIFY_FILE", "inotify.img", 0x48424431, PrefixCommon}
	InotifyWd    = Kind{"INOTIFY_WD", "inotify-wd.img", 0x54562009, PrefixCommon}
	Fanotify     = Kind{"FANOTIFY_FILE", "fanotify.img", 0x55096122, PrefixCommon}
	FanotifyMark = Kind{"FANOTIFY_MARK", "fanotify-mark.img", 0x56506035, PrefixCommon}
	Signalfd     = Kind{"SIGNALFD", "signalfd.img", 0x57323820, PrefixCommon}
	Timerfd      = Kind{"TIMERFD", "timerfd.img", 0x50493712, PrefixCommon}
	Tty          = Kind{"TTY_FILES", "tty.img", 0x59433025, PrefixCommon}
	TtyInfo      = Kind{"TTY_INFO", "tty-info.img", 0x59453036, PrefixCommon}
	TtyData      = Kind{"TTY_DATA", "tty-data.img", 0x59413026, PrefixCommon}
	Memfd        = Kind{"MEMFD_INODE", "memfd.img", 0x48453499, PrefixCommon}
	GhostFile    = Kind{"GHOST_FILE", "ghost-file-%x.img", 0x52583605, PrefixCommon}
	RemapFpath   = Kind{"REMAP_FPATH", "remap-fpath.img", 0x59133954, PrefixCommon}
	FileLocks    = Kind{"FILE_LOCKS", "filelocks.img", 0x54323616, PrefixCommon}
	NsFiles      = Kind{"NS_FILES", "ns-files.img", 0x61394011, PrefixCommon}
	ExtFiles     = Kind{"EXT_FILES", "ext-files.img", 0x59255641, PrefixCommon}
	Tunfile      = Kind{"TUNFILE", "tunfile.img", 0x57143751, PrefixCommon}

	Sigact      = Kind{"SIGACT", "sigacts-%d.img", 0x55344201, PrefixCommon}
	Itimers     = Kind{"ITIMERS", "itimers-%d.img", 0x57464056, PrefixCommon}
	PosixTimers = Kind{"POSIX_TIMERS", "posix-timers-%d.img", 0x52603957, PrefixCommon}
	Rlimit      = Kind{"RLIMIT", "rlimit-%d.img", 0x57113925, PrefixCommon}
	// Shared and private pending signals share one magic (PSIGNAL_MAGIC
	// is SIGNAL_MAGIC in magic.h); only the file name differs.
	SharedSignals  = Kind{"SIGNAL", "signal-s-%d.img", 0x59255647, PrefixCommon}
	PrivateSignals = Kind{"SIGNAL", "signal-p-%d.img", 0x59255647, PrefixCommon}
	Seccomp        = Kind{"SECCOMP", "seccomp.img", 0x64413049, PrefixCommon}

	IpcVar  = Kind{"IPC_VAR", "ipcns-var-%d.img", 0x53115007, PrefixCommon}
	IpcShm  = Kind{"IPCNS_SHM", "ipcns-shm-%d.img", 0x46283044, PrefixCommon}
	IpcMsg  = Kind{"IPCNS_MSG", "ipcns-msg-%d.img", 0x55453737, PrefixCommon}
	IpcSem  = Kind{"IPCNS_SEM", "ipcns-sem-%d.img", 0x59573019, PrefixCommon}
	Mnts    = Kind{"MNTS", "mountpoints-%d.img", 0x55563928, PrefixCommon}
	Utsns   = Kind{"UTSNS", "utsns-%d.img", 0x54473203, PrefixCommon}
	Netdev  = Kind{"NETDEV", "netdev-%d.img", 0x57373951, PrefixCommon}
	Netns   = Kind{"NETNS", "netns-%d.img", 0x55933752, PrefixCommon}
	Userns  = Kind{"USERNS", "userns-%d.img", 0x55474906, PrefixCommon}
	Pidns   = Kind{"PIDNS", "pidns-%d.img", 0x61157326, PrefixCommon}
	Timens  = Kind{"TIMENS", "timens-%d.img", 0x43114433, PrefixCommon}
	Cgroup  = Kind{"CGROUP", "cgroup.img", 0x59383330, PrefixCommon}
	Cpuinfo = Kind{"CPUINFO", "cpuinfo.img", 0x61404013, PrefixCommon}

	// IrmapCache is a service image: CRIU opens it O_SERVICE, so its head
	// word is MagicService.
	IrmapCache = Kind{"IRMAP_CACHE", "irmap-cache.img", 0x57004059, PrefixService}
)

// AllKinds lists every Kind above, for tables and tests.
var AllKinds = []Kind{
	Inventory, Pstree, Core, Ids, Creds, Mm, Pagemap, Pages, Fs,
	Files, Fdinfo, RegFiles, Pipes, PipesData, Fifo, FifoData, UnixSk, InetSk,
	PacketSk, NetlinkSk, SkQueues, TCPStream, Eventfd, Eventpoll, EventpollTfd,
	Inotify, InotifyWd, Fanotify, FanotifyMark, Signalfd, Timerfd, Tty, TtyInfo,
	TtyData, Memfd, GhostFile, RemapFpath, FileLocks, NsFiles, ExtFiles, Tunfile,
	Sigact, Itimers, PosixTimers, Rlimit, SharedSignals, PrivateSignals, Seccomp,
	IpcVar, IpcShm, IpcMsg, IpcSem, Mnts, Utsns, Netdev, Netns, Userns, Pidns,
	Timens, Cgroup, Cpuinfo, IrmapCache,
}

// FileName returns the image's file name, e.g. Core.FileName(42) is
// "core-42.img" and Files.FileName() is "files.img". It panics when the
// number of ids does not match the pattern: that is a bug in the caller,
// not a condition to handle.
func (k Kind) FileName(id ...int) string {
	verbs := strings.Count(k.File, "%")
	if verbs != len(id) {
		panic(fmt.Sprintf("images: %s takes %d id(s), got %d", k.File, verbs, len(id)))
	}
	if verbs == 0 {
		return k.File
	}
	args := make([]any, len(id))
	for i, v := range id {
		args[i] = v
	}
	return fmt.Sprintf(k.File, args...)
}

// head returns the bytes an image of this kind starts with.
func (k Kind) head() []byte {
	switch k.Prefix {
	case PrefixRaw:
		return nil
	case PrefixNone:
		return le32(nil, k.Magic)
	case PrefixService:
		return le32(le32(nil, MagicService), k.Magic)
	default:
		return le32(le32(nil, MagicCommon), k.Magic)
	}
}

func (k Kind) String() string { return k.Name }

func le32(b []byte, v uint32) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
}
