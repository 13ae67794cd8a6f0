package images

import (
	"github.com/checkpoint-restore/go-criu/v7/crit/images/core-x86"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/vma"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

const samplePid = 4242

// sample is one image written by the tests: its kind, file name, entries,
// how to allocate each entry for reading (by index: pagemap's first entry
// differs from the rest), and a string crit's pretty JSON must contain.
type sample struct {
	kind    Kind
	file    string
	msgs    []proto.Message
	newMsg  func(i int) proto.Message
	crit    string
	goCritT proto.Message // entry type for go-criu's Decode
}

func same[T proto.Message](f func() T) func(int) proto.Message {
	return func(int) proto.Message { return f() }
}

// fillRequired sets every unset proto2 required field of m (recursively)
// to its zero value, so samples can name only the fields that matter.
func fillRequired(m proto.Message) proto.Message {
	fill(m.ProtoReflect())
	return m
}

func fill(m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		switch {
		case fd.Kind() != protoreflect.MessageKind:
			if fd.Cardinality() == protoreflect.Required && !m.Has(fd) {
				m.Set(fd, fd.Default())
			}
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				fill(l.Get(j).Message())
			}
		case fd.IsMap():
		case fd.Cardinality() == protoreflect.Required || m.Has(fd):
			fill(m.Mutable(fd).Message())
		}
	}
}

func samples() []sample {
	ids := &criu_core.TaskKobjIdsEntry{
		VmId: proto.Uint32(1), FilesId: proto.Uint32(2), FsId: proto.Uint32(3), SighandId: proto.Uint32(4),
		PidNsId: proto.Uint32(4026531836),
	}
	core := fillRequired(&criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		ThreadInfo: &core_x86.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(0x7f00deadb000),
			Gpregs: &core_x86.UserX86RegsEntry{
				Ip: proto.Uint64(0x401000), Sp: proto.Uint64(0x7ffc0000f000),
				Ax: proto.Uint64(0xffff_ffff_ffff_fe00), OrigAx: proto.Uint64(230),
				Cs: proto.Uint64(0x33), Ss: proto.Uint64(0x2b), Flags: proto.Uint64(0x246),
			},
			Fpregs: &core_x86.UserX86FpregsEntry{
				Cwd: proto.Uint32(0x37f), Mxcsr: proto.Uint32(0x1f80), MxcsrMask: proto.Uint32(0xffff),
				StSpace: make([]uint32, 32), XmmSpace: make([]uint32, 64),
			},
		},
		Tc: &criu_core.TaskCoreEntry{
			TaskState: proto.Uint32(1), Comm: proto.String("ctcr-sample"),
			BlkSigset: proto.Uint64(0), Personality: proto.Uint32(0), ExitCode: proto.Uint32(0), Flags: proto.Uint32(0x400100),
		},
		ThreadCore: &criu_core.ThreadCoreEntry{FutexRla: proto.Uint64(0), FutexRlaLen: proto.Uint32(24)},
	})
	const vmaStart = 0x7f1234500000
	mmEntry := fillRequired(&mm.MmEntry{
		MmStartCode: proto.Uint64(0x400000), MmEndCode: proto.Uint64(0x401000),
		MmStartStack: proto.Uint64(0x7ffc00010000), ExeFileId: proto.Uint32(7),
		MmSavedAuxv: []uint64{6, 4096, 0, 0},
		Vmas: []*vma.VmaEntry{
			{Start: proto.Uint64(0x400000), End: proto.Uint64(0x401000), Pgoff: proto.Uint64(0), Shmid: proto.Uint64(7),
				Prot: proto.Uint32(5), Flags: proto.Uint32(2), Status: proto.Uint32(1 | 1<<2), Fd: proto.Int64(-1)},
			{Start: proto.Uint64(vmaStart), End: proto.Uint64(vmaStart + 0x4000), Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0),
				Prot: proto.Uint32(3), Flags: proto.Uint32(0x22), Status: proto.Uint32(1 | 1<<5), Fd: proto.Int64(-1)},
			// A VMA after the last dumped page, as a real dump always has
			// (the stack): crit x rss runs off the end of the VMA list
			// without one.
			{Start: proto.Uint64(0x7ffc0000e000), End: proto.Uint64(0x7ffc00010000), Pgoff: proto.Uint64(0), Shmid: proto.Uint64(0),
				Prot: proto.Uint32(3), Flags: proto.Uint32(0x122), Status: proto.Uint32(1 | 1<<1 | 1<<5), Fd: proto.Int64(-1)},
		},
	})
	files := []proto.Message{
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(7), Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(7), Flags: proto.Uint32(0), Pos: proto.Uint64(0), Name: proto.String("/usr/bin/ctcr-sample"),
			Fown: fillRequired(&fown.FownEntry{}).(*fown.FownEntry),
		}},
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(8), Reg: &regfile.RegFileEntry{
			Id: proto.Uint32(8), Flags: proto.Uint32(2), Pos: proto.Uint64(12), Name: proto.String("/tmp/ctcr-sample.log"),
			Fown: fillRequired(&fown.FownEntry{}).(*fown.FownEntry),
		}},
	}
	return []sample{
		{
			kind: Inventory, file: Inventory.FileName(),
			msgs: []proto.Message{&inventory.InventoryEntry{
				ImgVersion: proto.Uint32(ImagesV1_1), FdinfoPerId: proto.Bool(true), NsPerId: proto.Bool(true),
				RootIds: ids, Lsmtype: inventory.Lsmtype_NO_LSM.Enum(), DumpUptime: proto.Uint64(123456789),
			}},
			newMsg:  same(func() *inventory.InventoryEntry { return &inventory.InventoryEntry{} }),
			crit:    `"dump_uptime": 123456789`,
			goCritT: &inventory.InventoryEntry{},
		},
		{
			kind: Pstree, file: Pstree.FileName(),
			msgs: []proto.Message{
				&pstree.PstreeEntry{Pid: proto.Uint32(samplePid), Ppid: proto.Uint32(0), Pgid: proto.Uint32(samplePid), Sid: proto.Uint32(samplePid), Threads: []uint32{samplePid, samplePid + 1}},
				&pstree.PstreeEntry{Pid: proto.Uint32(samplePid + 2), Ppid: proto.Uint32(samplePid), Pgid: proto.Uint32(samplePid), Sid: proto.Uint32(samplePid), Threads: []uint32{samplePid + 2}},
			},
			newMsg:  same(func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} }),
			crit:    `"ppid": 4242`,
			goCritT: &pstree.PstreeEntry{},
		},
		{
			kind: Core, file: Core.FileName(samplePid), msgs: []proto.Message{core},
			newMsg:  same(func() *criu_core.CoreEntry { return &criu_core.CoreEntry{} }),
			crit:    `"comm": "ctcr-sample"`,
			goCritT: &criu_core.CoreEntry{},
		},
		{
			kind: Mm, file: Mm.FileName(samplePid), msgs: []proto.Message{mmEntry},
			newMsg:  same(func() *mm.MmEntry { return &mm.MmEntry{} }),
			crit:    `"0x7f1234500000"`,
			goCritT: &mm.MmEntry{},
		},
		{
			kind: Pagemap, file: Pagemap.FileName(samplePid),
			msgs: []proto.Message{
				&pagemap.PagemapHead{PagesId: proto.Uint32(1)},
				&pagemap.PagemapEntry{Vaddr: proto.Uint64(vmaStart), NrPages: proto.Uint32(2), Flags: proto.Uint32(4)},          // PE_PRESENT
				&pagemap.PagemapEntry{Vaddr: proto.Uint64(vmaStart + 0x3000), NrPages: proto.Uint32(1), Flags: proto.Uint32(4)}, // PE_PRESENT
			},
			newMsg: func(i int) proto.Message {
				if i == 0 {
					return &pagemap.PagemapHead{}
				}
				return &pagemap.PagemapEntry{}
			},
			crit:    `"pages_id": 1`,
			goCritT: &pagemap.PagemapEntry{},
		},
		{
			kind: Files, file: Files.FileName(), msgs: files,
			newMsg:  same(func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} }),
			crit:    `"/tmp/ctcr-sample.log"`,
			goCritT: &fdinfo.FileEntry{},
		},
		{
			kind: Fdinfo, file: Fdinfo.FileName(2),
			msgs: []proto.Message{
				&fdinfo.FdinfoEntry{Id: proto.Uint32(8), Flags: proto.Uint32(0), Type: fdinfo.FdTypes_REG.Enum(), Fd: proto.Uint32(3)},
				&fdinfo.FdinfoEntry{Id: proto.Uint32(8), Flags: proto.Uint32(1), Type: fdinfo.FdTypes_REG.Enum(), Fd: proto.Uint32(77)},
			},
			newMsg:  same(func() *fdinfo.FdinfoEntry { return &fdinfo.FdinfoEntry{} }),
			crit:    `"fd": 77`,
			goCritT: &fdinfo.FdinfoEntry{},
		},
		{
			kind: Fs, file: Fs.FileName(samplePid),
			msgs:    []proto.Message{&fs.FsEntry{CwdId: proto.Uint32(8), RootId: proto.Uint32(9), Umask: proto.Uint32(0o22)}},
			newMsg:  same(func() *fs.FsEntry { return &fs.FsEntry{} }),
			crit:    `"root_id": 9`,
			goCritT: &fs.FsEntry{},
		},
		{
			kind: Ids, file: Ids.FileName(samplePid), msgs: []proto.Message{ids},
			newMsg:  same(func() *criu_core.TaskKobjIdsEntry { return &criu_core.TaskKobjIdsEntry{} }),
			crit:    `4026531836`,
			goCritT: &criu_core.TaskKobjIdsEntry{},
		},
	}
}
