package tunnel

import (
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// codec is gRPC's proto codec with a short path for the message that carries the bytes of every
// tunnel: TunnelMessage{data: Data{payload, close_write}}. The wire format is protobuf's, so either
// end may use the plain codec. What the short path saves per chunk: the proto codec gathers a
// received message into one buffer and then copies the payload out into a fresh allocation (which
// Go clears); here the payload is copied once, straight from the received frames, into the buffer
// the previous message to the same TunnelMessage left (RecvMsg into a reused message, as
// Conn.Read and the server's copy loops do). Anything else, or any Data it does not recognise
// byte for byte, goes to the proto codec.
type codec struct{ proto encoding.CodecV2 }

// Codec is the tunnel codec, for servers and clients that carry tunnels (ServerOptions and
// DialOptions install it).
var Codec encoding.CodecV2 = codec{proto: encoding.GetCodecV2(protoenc.Name)}

func (codec) Name() string { return protoenc.Name }

// Protobuf tags of the short path: TunnelMessage.data (3, bytes), Data.payload (1, bytes),
// Data.close_write (2, varint).
const (
	tagData       byte = 3<<3 | byte(protowire.BytesType)
	tagPayload    byte = 1<<3 | byte(protowire.BytesType)
	tagCloseWrite byte = 2<<3 | byte(protowire.VarintType)
)

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*Frame); ok {
		if f.raw != nil {
			// The frame's buffers go to gRPC, which frees them once they are written.
			b := f.raw
			f.raw = nil
			return b, nil
		}
		v = f.Message()
	}
	d := dataOf(v)
	if d == nil {
		return c.proto.Marshal(v)
	}
	p := d.GetPayload()
	inner := 0
	if len(p) > 0 {
		inner += 1 + protowire.SizeBytes(len(p))
	}
	if d.GetCloseWrite() {
		inner += 2
	}
	n := 1 + protowire.SizeBytes(inner)
	buf := bufferPool.Get(n)
	b := append((*buf)[:0], tagData)
	b = protowire.AppendVarint(b, uint64(inner))
	if len(p) > 0 {
		b = append(b, tagPayload)
		b = protowire.AppendBytes(b, p)
	}
	if d.GetCloseWrite() {
		b = append(b, tagCloseWrite, 1)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, bufferPool)}, nil
}

// dataOf is the Data of a message the short path can encode exactly: a TunnelMessage holding Data,
// neither with unknown fields (which the short path would drop).
func dataOf(v any) *managerv1.Data {
	m, ok := v.(*managerv1.TunnelMessage)
	if !ok {
		return nil
	}
	d := m.GetData()
	if d == nil || len(m.ProtoReflect().GetUnknown()) > 0 || len(d.ProtoReflect().GetUnknown()) > 0 {
		return nil
	}
	return d
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*Frame); ok {
		f.Free()
		if d, ok := parseData(data); ok {
			// gRPC frees data once Unmarshal returns; the frame keeps its own reference.
			data.Ref()
			f.raw, f.at, f.n, f.closeWrite = data, d.at, d.n, d.closeWrite
			return nil
		}
		f.msg = new(managerv1.TunnelMessage)
		return c.proto.Unmarshal(data, f.msg)
	}
	if m, ok := v.(*managerv1.TunnelMessage); ok && unmarshalData(data, m) {
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// unmarshalData decodes data into m if it is a TunnelMessage with a Data of at most one payload
// and one close_write (true), in that order (what every encoder writes); otherwise it leaves m
// alone and returns false. m's old payload array is reused when it is large enough.
func unmarshalData(data mem.BufferSlice, m *managerv1.TunnelMessage) bool {
	d, ok := parseData(data)
	if !ok {
		return false
	}
	var payload []byte
	if d.hasPayload {
		payload = reuse(m, d.n)
		d.at.copyTo(payload)
	}
	dm := m.GetData()
	if dm == nil {
		dm = &managerv1.Data{}
	} else {
		dm.Reset()
	}
	m.Reset()
	dm.Payload, dm.CloseWrite = payload, d.closeWrite
	m.Msg = &managerv1.TunnelMessage_Data{Data: dm}
	return true
}

// parsedData is where a Data message's fields are in the buffers that hold it.
type parsedData struct {
	at         sliceReader // where the payload starts
	n          int         // its length
	hasPayload bool
	closeWrite bool
}

// parseData finds the fields of a TunnelMessage that holds a Data of at most one payload and one
// close_write (true), in that order (what every encoder writes); false for anything else.
func parseData(data mem.BufferSlice) (d parsedData, ok bool) {
	r := sliceReader{bufs: data}
	total := data.Len()
	if tag, ok := r.byte(); !ok || tag != tagData {
		return d, false
	}
	inner, ok := r.uvarint()
	if !ok || inner != uint64(total-r.read) {
		return d, false
	}
	for r.read < total {
		tag, _ := r.byte()
		switch {
		case tag == tagPayload && !d.hasPayload && !d.closeWrite:
			l, ok := r.uvarint()
			if !ok || l > uint64(total-r.read) {
				return d, false
			}
			d.at, d.n, d.hasPayload = r, int(l), true
			r.skip(d.n)
		case tag == tagCloseWrite && !d.closeWrite:
			v, ok := r.uvarint()
			if !ok || v != 1 {
				return d, false // anything but true: rare enough for the proto codec
			}
			d.closeWrite = true
		default:
			return d, false
		}
	}
	return d, true
}

// reuse returns a slice of n bytes for a payload: the old payload's array of m when it holds n,
// else a new one. A reused message gets room for a whole chunk, so one array serves all of them.
func reuse(m *managerv1.TunnelMessage, n int) []byte {
	old := m.GetData().GetPayload()
	if cap(old) >= n {
		return old[:n]
	}
	if old != nil {
		return make([]byte, n, max(n, ChunkSize))
	}
	return make([]byte, n)
}

// sliceReader reads a mem.BufferSlice front to back without gathering it.
type sliceReader struct {
	bufs mem.BufferSlice
	i    int // current buffer
	off  int // offset in it
	read int // bytes consumed
}

func (r *sliceReader) byte() (byte, bool) {
	for r.i < len(r.bufs) {
		b := r.bufs[r.i].ReadOnlyData()
		if r.off < len(b) {
			c := b[r.off]
			r.off++
			r.read++
			return c, true
		}
		r.i, r.off = r.i+1, 0
	}
	return 0, false
}

func (r *sliceReader) uvarint() (uint64, bool) {
	var x uint64
	for s := uint(0); s < 64; s += 7 {
		c, ok := r.byte()
		if !ok {
			return 0, false
		}
		x |= uint64(c&0x7f) << s
		if c < 0x80 {
			return x, true
		}
	}
	return 0, false
}

// copyTo fills p; the caller checked that the slice holds len(p) more bytes.
func (r *sliceReader) copyTo(p []byte) {
	for len(p) > 0 {
		n := copy(p, r.bufs[r.i].ReadOnlyData()[r.off:])
		p = p[n:]
		r.advance(n)
	}
}

// skip passes n bytes; the caller checked that the slice holds them.
func (r *sliceReader) skip(n int) {
	for n > 0 {
		k := min(n, len(r.bufs[r.i].ReadOnlyData())-r.off)
		n -= k
		r.advance(k)
	}
}

func (r *sliceReader) advance(n int) {
	r.off += n
	r.read += n
	if r.off == len(r.bufs[r.i].ReadOnlyData()) {
		r.i, r.off = r.i+1, 0
	}
}
