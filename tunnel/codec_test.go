package tunnel

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

func dataMsg(p []byte, cw bool) *managerv1.TunnelMessage {
	return &managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &managerv1.Data{Payload: p, CloseWrite: cw}}}
}

// split cuts b into buffers at the given sizes (cycling), as gRPC hands over a message in frames.
func split(b []byte, sizes ...int) mem.BufferSlice {
	var s mem.BufferSlice
	for i := 0; len(b) > 0; i++ {
		n := min(len(b), max(sizes[i%len(sizes)], 0))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

func TestCodecWritesProtobuf(t *testing.T) {
	for _, m := range []*managerv1.TunnelMessage{
		dataMsg(nil, false),
		dataMsg(nil, true),
		dataMsg([]byte("x"), false),
		dataMsg(bytes.Repeat([]byte{7}, 200), true),
		dataMsg(bytes.Repeat([]byte{9}, ChunkSize), false),
		{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{SessionId: "s", Address: "10.0.0.1:80"}}},
	} {
		got, err := Codec.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Materialize(), want) {
			t.Errorf("%v: codec wrote %x, protobuf %x", m, got.Materialize(), want)
		}
		got.Free()
	}
}

func TestCodecReadsWhatProtobufReads(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	for _, m := range []*managerv1.TunnelMessage{
		dataMsg(nil, false),
		dataMsg(nil, true),
		dataMsg([]byte{}, true),
		dataMsg(payload[:1], false),
		dataMsg(payload, true),
		{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}},
	} {
		wire, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, sizes := range [][]int{{len(wire) + 1}, {1}, {16 << 10}, {3, 0, 5}} {
			got := &managerv1.TunnelMessage{}
			if err := Codec.Unmarshal(split(wire, sizes...), got); err != nil {
				t.Fatalf("%v in pieces of %v: %v", m, sizes, err)
			}
			if !proto.Equal(got, m) {
				t.Errorf("%v in pieces of %v: read %v", m, sizes, got)
			}
		}
	}
}

// A message received into a reused TunnelMessage reuses its payload array: no allocation per chunk.
func TestCodecReusesThePayload(t *testing.T) {
	chunk := bytes.Repeat([]byte{1}, ChunkSize)
	wire, _ := proto.Marshal(dataMsg(chunk, false))
	small, _ := proto.Marshal(dataMsg([]byte("hi"), false))
	var m managerv1.TunnelMessage
	if err := Codec.Unmarshal(split(small, 16<<10), &m); err != nil {
		t.Fatal(err)
	}
	if err := Codec.Unmarshal(split(wire, 16<<10), &m); err != nil {
		t.Fatal(err)
	}
	first := &m.GetData().GetPayload()[0]
	allocs := testing.AllocsPerRun(50, func() {
		if err := Codec.Unmarshal(split(wire, 16<<10), &m); err != nil {
			t.Fatal(err)
		}
	})
	if &m.GetData().GetPayload()[0] != first || !bytes.Equal(m.GetData().GetPayload(), chunk) {
		t.Error("the payload array was not reused, or holds the wrong bytes")
	}
	// split itself allocates the pieces (5 of 16 KiB, the slice header array and growth); the
	// decode must add nothing per message beyond the oneof wrapper.
	base := testing.AllocsPerRun(50, func() { _ = split(wire, 16<<10) })
	if allocs > base+1 {
		t.Errorf("decoding into a reused message allocates %.0f times beyond the input's %.0f", allocs-base, base)
	}
}

// FuzzCodecUnmarshal: for any bytes, in any framing, the tunnel codec reads what protobuf reads,
// or fails where it fails.
func FuzzCodecUnmarshal(f *testing.F) {
	for _, m := range []*managerv1.TunnelMessage{
		dataMsg([]byte("hello"), true), dataMsg(nil, true), dataMsg([]byte{}, false),
		{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{Address: "1.2.3.4:5"}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b, uint8(3))
	}
	f.Add([]byte{tagData, 5, tagPayload, 1, 'x', tagPayload, 0}, uint8(1))
	f.Add([]byte{tagData, 2, tagCloseWrite, 0}, uint8(2))
	f.Add([]byte{tagData, 3, tagCloseWrite, 0x81, 0}, uint8(2))
	f.Fuzz(func(t *testing.T, wire []byte, piece uint8) {
		want := &managerv1.TunnelMessage{}
		werr := proto.Unmarshal(wire, want)
		got := &managerv1.TunnelMessage{}
		gerr := Codec.Unmarshal(split(wire, int(piece)%64+1), got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("protobuf: %v, codec: %v", werr, gerr)
		}
		if werr == nil && !proto.Equal(got, want) {
			t.Fatalf("protobuf read %v, codec %v", want, got)
		}
		if werr == nil {
			// And what it reads, it writes back as protobuf would.
			out, err := Codec.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			again := &managerv1.TunnelMessage{}
			if err := proto.Unmarshal(out.Materialize(), again); err != nil || !proto.Equal(again, got) {
				t.Fatalf("round trip of %v: %v %v", got, again, err)
			}
		}
	})
}

func TestDirtyPoolTiers(t *testing.T) {
	p := newDirtyPool()
	for _, n := range []int{0, 1, 256, 257, 16 << 10, 64<<10 + 9, 1 << 20, 1<<20 + 1} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d) has length %d", n, len(*b))
		}
		if n <= 1<<20 && cap(*b) != 1<<shift(n) {
			t.Errorf("Get(%d) has capacity %d, want the tier %d", n, cap(*b), 1<<shift(n))
		}
		p.Put(b)
	}
	// A buffer that is not a whole tier is dropped, not handed out short.
	odd := make([]byte, 300)
	p.Put(&odd)
	if b := p.Get(400); cap(*b) < 400 {
		t.Errorf("Get(400) after Put of a 300-byte buffer: capacity %d", cap(*b))
	}
}
