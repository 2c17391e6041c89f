package netproxy_test

import (
	"fmt"
	"io"
	"net"
	"time"

	"github.com/controlfeed/controlfeed/internal/netproxy"
)

// A client talks to a server through the proxy; the test stalls the link
// from the server back to the client, then lets the held bytes through.
func Example() {
	srv, _ := net.Listen("tcp", "127.0.0.1:0")
	defer srv.Close()
	go func() {
		c, _ := srv.Accept()
		defer c.Close()
		_, _ = io.Copy(c, c) // echo
	}()

	p, err := netproxy.Listen("127.0.0.1:0", srv.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	c, _ := net.Dial("tcp", p.Addr())
	defer c.Close()

	p.Pause(netproxy.ToClient)
	_, _ = c.Write([]byte("ping"))
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 4)
	_, err = c.Read(buf)
	fmt.Println("while stalled:", err != nil)

	p.Resume(netproxy.ToClient)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.ReadFull(c, buf)
	fmt.Println("after resume:", string(buf[:n]))
	// Output:
	// while stalled: true
	// after resume: ping
}
