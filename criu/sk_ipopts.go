package criu

import (
	"errors"
	"fmt"
	"sort"

	skinet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/kernel"
)

// IP-level options of inet sockets (IPPROTO_IP and IPPROTO_IPV6), kept in
// the ip_opts_entry of inet_sk_entry.
//
// CRIU's ip_opts_entry has fields for IP_FREEBIND (1), the raw socket
// options (4), IP_PKTINFO (5), IP_TOS (6) and IP_TTL (7); the go-criu
// types ctcr builds on know fields 1 to 5, so 6 and 7 are written as the
// protobuf fields they are in CRIU's schema, through the message's
// unknown fields. An IPv6 socket keeps its traffic class and unicast hop
// limit in those two, and IPV6_RECVPKTINFO in pktinfo.
//
// The other options ctcr keeps have no field in CRIU's schema. They go,
// each as a varint, into fields numbered from ipOptExtBase: far above
// CRIU's numbers, so that CRIU and crit skip them as unknown fields and a
// later CRIU field cannot be mistaken for one of them.
//
// Only values that differ from those of a new socket of the same family,
// type and protocol are written: an option the task never set stays unset
// (IP_TTL then follows the namespace's sysctl, as it did), and options a
// socket type refuses to set (IP_MULTICAST_TTL of a TCP socket) are not
// set at restore.

const (
	ipOptTos     protowire.Number = 6
	ipOptTTL     protowire.Number = 7
	ipOptExtBase protowire.Number = 1000
)

// ipOpt is one IP-level option as an integer.
type ipOpt struct {
	level, opt int
	name       string
	field      protowire.Number
	// notStream: a TCP socket answers it but refuses to set it
	// (multicast options; an accepted socket has IP_MULTICAST_TTL set
	// to the TTL of the SYN that made it, tcp_v4_syn_recv_sock).
	notStream bool
}

var ipv4Opts = []ipOpt{
	{unix.IPPROTO_IP, unix.IP_TOS, "IP_TOS", ipOptTos, false},
	{unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL", ipOptTTL, false},
	{unix.IPPROTO_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT", ipOptExtBase + 1, false},
	{unix.IPPROTO_IP, unix.IP_RECVERR, "IP_RECVERR", ipOptExtBase + 2, false},
	{unix.IPPROTO_IP, unix.IP_RECVTOS, "IP_RECVTOS", ipOptExtBase + 3, false},
	{unix.IPPROTO_IP, unix.IP_RECVTTL, "IP_RECVTTL", ipOptExtBase + 4, false},
	{unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, "IP_MTU_DISCOVER", ipOptExtBase + 5, false},
	{unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, "IP_MULTICAST_TTL", ipOptExtBase + 6, true},
	{unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", ipOptExtBase + 7, true},
	{unix.IPPROTO_IP, unix.IP_MINTTL, "IP_MINTTL", ipOptExtBase + 8, false},
	{unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", ipOptExtBase + 9, false},
	{unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR", ipOptExtBase + 10, false},
}

var ipv6Opts = []ipOpt{
	{unix.IPPROTO_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS", ipOptTos, false},
	{unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", ipOptTTL, false},
	{unix.IPPROTO_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT", ipOptExtBase + 1, false},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR", ipOptExtBase + 21, false},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS", ipOptExtBase + 22, false},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT", ipOptExtBase + 23, false},
	{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", ipOptExtBase + 24, false},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", ipOptExtBase + 25, true},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", ipOptExtBase + 26, true},
	{unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT", ipOptExtBase + 27, false},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR", ipOptExtBase + 28, false},
	{unix.IPPROTO_IPV6, unix.IPV6_ADDR_PREFERENCES, "IPV6_ADDR_PREFERENCES", ipOptExtBase + 29, false},
}

// udpliteOpts are UDP-Lite's checksum coverages.
var udpliteOpts = []ipOpt{
	{unix.IPPROTO_UDPLITE, kernel.UDPLITE_SEND_CSCOV, "UDPLITE_SEND_CSCOV", ipOptExtBase + 41, false},
	{unix.IPPROTO_UDPLITE, kernel.UDPLITE_RECV_CSCOV, "UDPLITE_RECV_CSCOV", ipOptExtBase + 42, false},
}

// ipv6RawChecksum is the offset IPV6_CHECKSUM gives (-1: none) of a raw
// IPv6 socket; ip_opts_raw_entry only says whether there is one.
var ipv6RawChecksum = ipOpt{unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, "IPV6_CHECKSUM", ipOptExtBase + 43, false}

func ipOptsOf(family, typ, protocol int) []ipOpt {
	opts := ipv4Opts
	if family == unix.AF_INET6 {
		opts = ipv6Opts
	}
	switch {
	case typ == unix.SOCK_DGRAM && protocol == unix.IPPROTO_UDPLITE:
		opts = append(append([]ipOpt{}, opts...), udpliteOpts...)
	case typ == unix.SOCK_RAW && family == unix.AF_INET6:
		opts = append(append([]ipOpt{}, opts...), ipv6RawChecksum)
	}
	return opts
}

// dumpRawOpts reads the options only raw sockets have: whether the task
// writes the IP header itself, IP_NODEFRAG, IPv6 checksumming and the
// ICMP type filter (ICMP_FILTER, a 32-bit mask, for raw ICMP sockets;
// ICMPV6_FILTER, 256 bits, for raw ICMPv6 ones).
func dumpRawOpts(fd, family, protocol int) (*skinet.IpOptsRawEntry, error) {
	r := &skinet.IpOptsRawEntry{}
	flag := func(level, opt int, name string, to **bool) error {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if ipOptAbsent(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*to = proto.Bool(v != 0)
		return nil
	}
	if family == unix.AF_INET6 {
		if err := flag(unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, "IPV6_HDRINCL", &r.Hdrincl); err != nil {
			return nil, err
		}
		if v, err := unix.GetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM); err == nil {
			r.Checksum = proto.Bool(v >= 0)
		}
	} else {
		if err := flag(unix.IPPROTO_IP, unix.IP_HDRINCL, "IP_HDRINCL", &r.Hdrincl); err != nil {
			return nil, err
		}
		if err := flag(unix.IPPROTO_IP, unix.IP_NODEFRAG, "IP_NODEFRAG", &r.Nodefrag); err != nil {
			return nil, err
		}
	}
	switch {
	case family == unix.AF_INET && protocol == unix.IPPROTO_ICMP:
		v, err := unix.GetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER)
		if err != nil {
			return nil, fmt.Errorf("ICMP_FILTER: %w", err)
		}
		r.IcmpvFilter = []uint32{uint32(v)}
	case family == unix.AF_INET6 && protocol == unix.IPPROTO_ICMPV6:
		f, err := unix.GetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER)
		if err != nil {
			return nil, fmt.Errorf("ICMPV6_FILTER: %w", err)
		}
		r.IcmpvFilter = append([]uint32(nil), f.Data[:]...)
	}
	return r, nil
}

// restoreRawOpts sets what dumpRawOpts read.
func restoreRawOpts(fd, family, protocol int, r *skinet.IpOptsRawEntry) error {
	if r == nil {
		return nil
	}
	if r.Hdrincl != nil {
		level, opt, name := unix.IPPROTO_IP, unix.IP_HDRINCL, "IP_HDRINCL"
		if family == unix.AF_INET6 {
			level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, "IPV6_HDRINCL"
		}
		if err := unix.SetsockoptInt(fd, level, opt, b2i(r.GetHdrincl())); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if r.Nodefrag != nil && family == unix.AF_INET {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_NODEFRAG, b2i(r.GetNodefrag())); err != nil {
			return fmt.Errorf("IP_NODEFRAG: %w", err)
		}
	}
	f := r.GetIcmpvFilter()
	switch {
	case len(f) == 0:
	case family == unix.AF_INET && protocol == unix.IPPROTO_ICMP && len(f) == 1:
		if err := unix.SetsockoptInt(fd, unix.SOL_RAW, unix.ICMP_FILTER, int(int32(f[0]))); err != nil {
			return fmt.Errorf("ICMP_FILTER %#x: %w", f[0], err)
		}
	case family == unix.AF_INET6 && protocol == unix.IPPROTO_ICMPV6 && len(f) == 8:
		var v unix.ICMPv6Filter
		copy(v.Data[:], f)
		if err := unix.SetsockoptICMPv6Filter(fd, unix.IPPROTO_ICMPV6, unix.ICMPV6_FILTER, &v); err != nil {
			return fmt.Errorf("ICMPV6_FILTER: %w", err)
		}
	default:
		return fmt.Errorf("an ICMP filter of %d words for a socket of family %d, protocol %d", len(f), family, protocol)
	}
	return nil
}

// freebindOpt is the option that says whether fd may bind an address no
// interface has: IPV6_FREEBIND on IPv6 sockets (the same flag as
// IP_FREEBIND, which raw IPv6 sockets do not answer).
func freebindOpt(family int) (level, opt int, name string) {
	if family == unix.AF_INET6 {
		return unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"
	}
	return unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND"
}

// setFreebind sets fd's freebind flag to on.
func setFreebind(fd, family int, on bool) error {
	level, opt, name := freebindOpt(family)
	if err := unix.SetsockoptInt(fd, level, opt, b2i(on)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// ipOptAbsent reports whether err means the socket has no such option.
func ipOptAbsent(err error) bool {
	return errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// dumpIPOpts reads the IP-level options of fd, a socket of family, typ and
// protocol, into an ip_opts_entry.
func dumpIPOpts(fd, family, typ, protocol int) (*skinet.IpOptsEntry, error) {
	e := &skinet.IpOptsEntry{}
	level, opt, name := freebindOpt(family)
	freebind, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	e.Freebind = proto.Bool(freebind != 0)
	pktLevel, pktOpt, pktName := unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"
	if family == unix.AF_INET6 {
		pktLevel, pktOpt, pktName = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"
	}
	pkt, err := unix.GetsockoptInt(fd, pktLevel, pktOpt)
	if err != nil && !ipOptAbsent(err) {
		return nil, fmt.Errorf("%s: %w", pktName, err)
	}
	if err == nil {
		e.Pktinfo = proto.Bool(pkt != 0)
	}
	// The defaults: a new socket of the same kind, in ctcr's namespace.
	fresh, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, protocol)
	if err != nil {
		// ping sockets only for the groups of ctcr's namespace's
		// net.ipv4.ping_group_range: a UDP socket has the same IP-level
		// defaults.
		fresh, err = unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return nil, fmt.Errorf("a new socket to compare options with: %w", err)
	}
	defer unix.Close(fresh)
	var ext []byte
	for _, o := range ipOptsOf(family, typ, protocol) {
		if o.notStream && typ == unix.SOCK_STREAM {
			continue
		}
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if ipOptAbsent(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.name, err)
		}
		if def, err := unix.GetsockoptInt(fresh, o.level, o.opt); err == nil && def == v {
			continue
		}
		ext = protowire.AppendTag(ext, o.field, protowire.VarintType)
		ext = protowire.AppendVarint(ext, uint64(uint32(int32(v))))
	}
	e.ProtoReflect().SetUnknown(ext)
	if typ == unix.SOCK_RAW {
		if e.Raw, err = dumpRawOpts(fd, family, protocol); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// ipOptValues returns the options of e outside go-criu's fields, by field
// number.
func ipOptValues(e *skinet.IpOptsEntry) (map[protowire.Number]int, error) {
	out := map[protowire.Number]int{}
	b := []byte(e.ProtoReflect().GetUnknown())
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		out[num] = int(int32(uint32(v)))
	}
	return out, nil
}

// restoreIPOpts sets on fd, after bind, the IP-level options dumpIPOpts
// read, but IP_FREEBIND, which bind needs and the caller sets.
func restoreIPOpts(fd, family, typ, protocol int, e *skinet.IpOptsEntry) error {
	if e == nil {
		return nil
	}
	if err := restoreRawOpts(fd, family, protocol, e.GetRaw()); err != nil {
		return err
	}
	if e.Pktinfo != nil {
		level, opt, name := unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO"
		if family == unix.AF_INET6 {
			level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"
		}
		if err := unix.SetsockoptInt(fd, level, opt, b2i(e.GetPktinfo())); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	vals, err := ipOptValues(e)
	if err != nil {
		return fmt.Errorf("ip_opts_entry: %w", err)
	}
	byField := map[protowire.Number]ipOpt{}
	for _, o := range ipOptsOf(family, typ, protocol) {
		byField[o.field] = o
	}
	var fields []protowire.Number
	for f := range vals {
		fields = append(fields, f)
	}
	sort.Slice(fields, func(i, j int) bool { return fields[i] < fields[j] })
	for _, f := range fields {
		o, ok := byField[f]
		if !ok {
			continue // a field of a later CRIU or ctcr: not known here
		}
		if err := unix.SetsockoptInt(fd, o.level, o.opt, vals[f]); err != nil {
			return fmt.Errorf("%s %d: %w", o.name, vals[f], err)
		}
	}
	return nil
}
