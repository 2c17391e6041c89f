package natsconn

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/controlfeed/controlfeed/internal/natsembed"
	"github.com/nats-io/nats.go"
)

// fakeDNS answers A and AAAA queries for names from a map, over UDP, and
// installs itself as net.DefaultResolver for the test.
func fakeDNS(t *testing.T, names map[string][]net.IP) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			// question name
			i := 12
			var labels []string
			for q[i] != 0 {
				l := int(q[i])
				labels = append(labels, string(q[i+1:i+1+l]))
				i += 1 + l
			}
			i++
			qtype := binary.BigEndian.Uint16(q[i:])
			qend := i + 4
			name := strings.ToLower(strings.Join(labels, "."))
			var ans []net.IP
			for _, ip := range names[name] {
				if (qtype == 1) == (ip.To4() != nil) && (qtype == 1 || qtype == 28) {
					ans = append(ans, ip)
				}
			}
			resp := append([]byte{}, q[:qend]...)
			resp[2], resp[3] = 0x81, 0x80
			if _, ok := names[name]; !ok {
				resp[3] = 0x83 // NXDOMAIN
			}
			binary.BigEndian.PutUint16(resp[6:], uint16(len(ans)))
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			for _, ip := range ans {
				resp = append(resp, 0xc0, 0x0c)
				b := ip.To4()
				typ := uint16(1)
				if b == nil {
					b, typ = ip.To16(), 28
				}
				resp = binary.BigEndian.AppendUint16(resp, typ)
				resp = binary.BigEndian.AppendUint16(resp, 1)
				resp = binary.BigEndian.AppendUint32(resp, 60)
				resp = binary.BigEndian.AppendUint16(resp, uint16(len(b)))
				resp = append(resp, b...)
			}
			pc.WriteTo(resp, from)
		}
	}()
	old := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	t.Cleanup(func() { net.DefaultResolver = old })
}

// Servers named by a host name with an AAAA and an A record (dual stack,
// the server listening on IPv4 only): nats.go dials the IPv6 address
// (refused at once), then the IPv4 one, so each server makes two Dial calls.
func TestConnect_DualStackNamesAndAHealthyServer(t *testing.T) {
	fakeDNS(t, map[string][]net.IP{
		"n1.test": {net.ParseIP("::1"), net.ParseIP("127.0.0.1")},
		"n2.test": {net.ParseIP("::1"), net.ParseIP("127.0.0.1")},
	})
	addrs, err := net.LookupHost("n1.test")
	t.Logf("n1.test: %v %v", addrs, err)
	const timeout = 1500 * time.Millisecond
	s := natsembed.StartForTest(t)
	port := func(u string) string { _, p, _ := net.SplitHostPort(strings.TrimPrefix(u, "nats://")); return p }
	urls := []string{"nats://n1.test:" + port(silentServer(t)), "nats://n2.test:" + port(silentServer(t)), s.ClientURL()}
	start := time.Now()
	nc, err := Connect("test", urls, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(timeout), nats.DontRandomize())...)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Connect with one healthy server of three (after %v): %v", took, err)
	}
	nc.Close()
	t.Logf("took %v", took)
}

// A wss:// server that accepts and never answers: nats.go's TLS handshake
// for websockets runs before any deadline is set.
func TestConnect_SilentWSS(t *testing.T) {
	u := "wss://" + strings.TrimPrefix(silentServer(t), "nats://")
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		nc, err := Connect("test", []string{u}, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(time.Second))...)
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("after %v: %v", time.Since(start), err)
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %v", time.Since(start))
		}
	case <-time.After(6 * time.Second):
		t.Fatal("Connect to a silent wss:// server still running after 6 s with a 1 s timeout")
	}
}

func TestConnect_HostName(t *testing.T) {
	s := natsembed.StartForTest(t)
	u := strings.Replace(s.ClientURL(), "127.0.0.1", "localhost", 1)
	nc, err := Connect("test", []string{u}, Auth{}, Options("t", time.Second, Auth{}, nats.Timeout(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	time.Sleep(1200 * time.Millisecond) // past the share's deadline set at dial time
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush after the connect budget's deadline: %v", err)
	}
	if _, err := nc.Request("nosuch", nil, 100*time.Millisecond); err == nil {
		t.Log("?")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}
