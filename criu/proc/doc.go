// Package proc owns the parsing of /proc for ctcr: every other package
// that needs a value from /proc/PID gets it from here, so the quirks of
// each file's format are handled in one place, as CRIU does in
// proc_parse.c.
//
// Each file has a pure parser over an io.Reader (or a []byte for binary
// files), which never panics on bad input and names the file and line in
// its error, and a Read function that opens the file of a live process.
// The Read functions keep the open/read error in the chain, so a caller can
// tell with errors.Is(err, os.ErrNotExist) or errors.Is(err, syscall.ESRCH)
// that the task exited while it was being read, which is an ordinary race
// during a dump.
//
// The formats, as printed by the kernel (fs/proc/task_mmu.c, array.c,
// base.c, fd.c):
//
//	maps    start-end perm offset  dev   inode   [padding] path
//	        7f..000-7f..000 rw-s 00000000 fe:00 9978060   /tmp/x (deleted)
//	        hex       hex   rwx  hex      hex:hex decimal  anything to EOL
//	                        s|p
//
//	stat    pid (comm) state ppid pgrp session ... exit_code
//	        comm is raw task->comm: it may hold spaces, ')' and even '\n',
//	        so the fields start after the LAST ')' of the file.
//
//	status  Key:<TAB>value lines; Name is escaped ("\n" -> `\n`, "\\" -> `\\`).
//
//	auxv    native-endian (key, value) uint64 pairs up to and including
//	        the AT_NULL pair.
//
//	pagemap one native-endian uint64 per virtual page, at offset
//	        (address / page size) * 8.
package proc
