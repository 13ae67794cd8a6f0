package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// A TCP connection whose other end is outside the dumped tree can move
// too (--tcp-established), if nothing answers that end while its own
// end is away: the dead socket's address would answer its segments with
// a reset. The dump holds such connections still with nftables, as CRIU
// does with iptables: a table of the tree's network namespace drops
// every segment of their 4-tuples, both ways, in the output and input
// hooks, from before their ends enter repair mode until the restore has
// them again (then the other end's retransmissions get through). The
// table's name is kept beside the images:
//
//	netlock.json: {"table": "ctcr-lock-PID-NANOS"}
//
// (CRIU has no image for it: it finds its rules by their comment.) A
// dump that fails, or lets the tasks run on, removes the table as soon
// as their sockets leave repair mode.

// netLockFile is the images-directory file naming the lock table.
const netLockFile = "netlock.json"

type netLockImage struct {
	Table string `json:"table"`
}

// netLock is the lock table of one dump, made on first use in the
// network namespace of task pid.
type netLock struct {
	pid   int
	table *nftables.Table
	in    *nftables.Chain
	out   *nftables.Chain
}

// nftConn is a netlink connection to the nftables of pid's network
// namespace; done closes what it opened.
func nftConn(pid int) (*nftables.Conn, func(), error) {
	ns, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("task %d: network namespace: %w", pid, err)
	}
	c, err := nftables.New(nftables.WithNetNSFd(ns))
	if err != nil {
		unix.Close(ns)
		return nil, nil, err
	}
	return c, func() { unix.Close(ns) }, nil
}

// lockNetwork holds the connection src -> dst of task pid's network
// namespace still until the restore; the first lock of a dump makes its
// table, which a failed dump, or one the tasks run on after, removes.
func (t *fileTable) lockNetwork(pid int, src, dst unix.Sockaddr) error {
	first := t.netLock == nil
	if first {
		t.netLock = &netLock{pid: pid}
	}
	if err := t.netLock.lock(src, dst); err != nil {
		return err
	}
	if first {
		l := t.netLock
		// Added before any socket's way out of repair mode, so it runs
		// after them all (give-backs run newest first).
		t.giveBacks = append(t.giveBacks, func() error { return unlockTable(l.pid, l.table.Name) })
	}
	return nil
}

// writeNetLock names the lock table beside the images.
func (t *fileTable) writeNetLock(path string) error {
	if t.netLock == nil || t.netLock.table == nil {
		return nil
	}
	b, err := json.Marshal(netLockImage{Table: t.netLock.table.Name})
	if err != nil {
		return err
	}
	return images.WriteNewFile(path, b)
}

// lock drops, from now on, every segment between src and dst.
func (l *netLock) lock(src, dst unix.Sockaddr) error {
	c, done, err := nftConn(l.pid)
	if err != nil {
		return err
	}
	defer done()
	if l.table == nil {
		l.table = c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: fmt.Sprintf("ctcr-lock-%d-%d", l.pid, time.Now().UnixNano())})
		accept := nftables.ChainPolicyAccept
		l.in = c.AddChain(&nftables.Chain{Name: "in", Table: l.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRaw, Policy: &accept})
		l.out = c.AddChain(&nftables.Chain{Name: "out", Table: l.table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &accept})
	}
	for _, dir := range [][2]unix.Sockaddr{{src, dst}, {dst, src}} {
		match, err := tcpTupleMatch(dir[0], dir[1])
		if err != nil {
			return err
		}
		for _, chain := range []*nftables.Chain{l.in, l.out} {
			c.AddRule(&nftables.Rule{Table: l.table, Chain: chain, Exprs: append(match, &expr.Verdict{Kind: expr.VerdictDrop})})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: drop the segments of %s: %w", tcpEnd(src, dst), err)
	}
	return nil
}

// unlockTable removes lock table name from pid's network namespace; one
// already gone (the namespace is new, or was unlocked) is no error.
func unlockTable(pid int, name string) error {
	c, done, err := nftConn(pid)
	if err != nil {
		return err
	}
	defer done()
	if _, err := c.ListTableOfFamily(name, nftables.TableFamilyINet); err != nil {
		return nil
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: remove the lock table %s: %w", name, err)
	}
	return nil
}

// tcpTupleMatch matches TCP segments from src to dst.
func tcpTupleMatch(src, dst unix.Sockaddr) ([]expr.Any, error) {
	src, dst = unmap(src), unmap(dst)
	cmp := func(data []byte) expr.Any { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }
	payload := func(base expr.PayloadBase, off, n uint32) expr.Any {
		return &expr.Payload{DestRegister: 1, Base: base, Offset: off, Len: n}
	}
	port := func(p int) []byte { return []byte{byte(p >> 8), byte(p)} }
	// The family's protocol number, where its header holds the source
	// address (the destination follows it), and both addresses.
	var nfproto byte
	var off uint32
	var sa, da []byte
	switch s := src.(type) {
	case *unix.SockaddrInet4:
		if d, ok := dst.(*unix.SockaddrInet4); ok {
			nfproto, off, sa, da = unix.NFPROTO_IPV4, 12, s.Addr[:], d.Addr[:]
		}
	case *unix.SockaddrInet6:
		if d, ok := dst.(*unix.SockaddrInet6); ok {
			nfproto, off, sa, da = unix.NFPROTO_IPV6, 8, s.Addr[:], d.Addr[:]
		}
	}
	if sa == nil {
		return nil, fmt.Errorf("TCP %s: not two addresses of one IP family", tcpEnd(src, dst))
	}
	n := uint32(len(sa))
	out := []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp([]byte{nfproto}),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp([]byte{unix.IPPROTO_TCP}),
		payload(expr.PayloadBaseNetworkHeader, off, n), cmp(sa),
		payload(expr.PayloadBaseNetworkHeader, off+n, n), cmp(da),
		payload(expr.PayloadBaseTransportHeader, 0, 2), cmp(port(sockPort(src))),
		payload(expr.PayloadBaseTransportHeader, 2, 2), cmp(port(sockPort(dst)))}
	return out, nil
}

// readNetLock returns the lock table a checkpoint names, or "".
func readNetLock(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var img netLockImage
	if err := json.Unmarshal(b, &img); err != nil {
		return "", corruptf(netLockFile, "%v", err)
	}
	if len(img.Table) == 0 || len(img.Table) > 64 {
		return "", corruptf(netLockFile, "table name %q", img.Table)
	}
	return img.Table, nil
}

func sockPort(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}
