package tunnel

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// countingPool counts the buffers given back to it.
type countingPool struct{ puts int }

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.puts++ }

func pooled(p *countingPool, s mem.BufferSlice) mem.BufferSlice {
	out := make(mem.BufferSlice, len(s))
	for i, b := range s {
		c := append([]byte(nil), b.ReadOnlyData()...)
		out[i] = mem.NewBuffer(&c, p)
	}
	return out
}

// A Data message received into a Frame is sent on byte for byte, from the buffers it arrived in,
// and is written out whole whatever its framing; the buffers go back to the pool once sent.
func TestFrameRelaysData(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 5000)
	for _, m := range []*managerv1.TunnelMessage{
		dataMsg(payload, false), dataMsg(payload, true), dataMsg(nil, true), dataMsg([]byte("x"), false),
	} {
		wire, _ := proto.Marshal(m)
		for _, sizes := range [][]int{{16 << 10}, {1}, {3, 0, 5}, {len(wire)}} {
			var p countingPool
			in := pooled(&p, split(wire, sizes...))
			var f Frame
			if err := Codec.Unmarshal(in, &f); err != nil {
				t.Fatal(err)
			}
			pieces := make([]int, len(in))
			for i, b := range in {
				pieces[i] = b.Len()
			}
			in.Free() // as gRPC does after Unmarshal: the frame holds its own reference
			if p.puts != 0 {
				t.Fatalf("%d buffers freed while the frame holds them", p.puts)
			}
			if !f.IsData() || f.CloseWrite() != m.GetData().GetCloseWrite() || f.Len() != len(m.GetData().GetPayload()) {
				t.Errorf("frame: data %v, close write %v, length %d", f.IsData(), f.CloseWrite(), f.Len())
			}
			var got bytes.Buffer
			if n, err := f.WriteTo(&got); err != nil || n != int64(f.Len()) || !bytes.Equal(got.Bytes(), m.GetData().GetPayload()) {
				t.Errorf("WriteTo in pieces of %v: %d bytes, %v", sizes, n, err)
			}
			out, err := Codec.Marshal(&f)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Materialize(), wire) {
				t.Errorf("relayed %x, want %x", out.Materialize(), wire)
			}
			out.Free() // as gRPC does once written
			f.Free()   // the frame gave its buffers away: nothing more to free
			want := 0  // gRPC pools only buffers above a threshold
			for _, n := range pieces {
				if !mem.IsBelowBufferPoolingThreshold(n) {
					want++
				}
			}
			if p.puts != want {
				t.Errorf("in pieces of %v: %d buffers back to the pool, want %d", sizes, p.puts, want)
			}
		}
	}
}

// Other messages, and every message under the plain proto codec, are decoded into the frame's
// TunnelMessage and encoded from it.
func TestFrameOtherMessages(t *testing.T) {
	plain := encoding.GetCodecV2(protoenc.Name)
	for _, m := range []*managerv1.TunnelMessage{
		{Msg: &managerv1.TunnelMessage_DialResult{DialResult: &managerv1.DialResult{Ok: true}}},
		{Msg: &managerv1.TunnelMessage_Dial{Dial: &managerv1.Dial{SessionId: "s", Address: "10.0.0.1:80"}}},
		dataMsg([]byte("hello"), true),
	} {
		wire, _ := proto.Marshal(m)
		for _, c := range []encoding.CodecV2{Codec, plain} {
			var f Frame
			if err := c.Unmarshal(split(wire, 4), &f); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(f.Message(), m) {
				t.Errorf("%s codec read %v, want %v", c.Name(), f.Message(), m)
			}
			out, err := c.Marshal(NewFrame(m))
			if err != nil {
				t.Fatal(err)
			}
			if again := new(managerv1.TunnelMessage); proto.Unmarshal(out.Materialize(), again) != nil || !proto.Equal(again, m) {
				t.Errorf("%s codec wrote %x for %v", c.Name(), out.Materialize(), m)
			}
		}
	}
}

// Receiving and relaying a chunk allocates nothing for its payload.
func TestFrameDoesNotCopy(t *testing.T) {
	wire, _ := proto.Marshal(dataMsg(bytes.Repeat([]byte{1}, ChunkSize), false))
	in := split(wire, 16<<10)
	var f Frame
	allocs := testing.AllocsPerRun(50, func() {
		if err := Codec.Unmarshal(in, &f); err != nil {
			t.Fatal(err)
		}
		out, _ := Codec.Marshal(&f)
		out.Free()
	})
	if allocs > 0 {
		t.Errorf("relaying a chunk allocates %.0f times", allocs)
	}
}
