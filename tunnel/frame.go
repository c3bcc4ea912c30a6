package tunnel

import (
	"io"
	"net"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/reflect/protoreflect"

	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// Frame is one TunnelMessage for a party that forwards payloads without looking into them: the
// broker between two streams, a tunnel end writing to a socket. Received with RecvMsg through
// Codec, a Data message stays in the buffers gRPC read it into (no copy, no allocation for the
// payload), and sent with SendMsg through Codec, those buffers go out as they are: the broker
// relays a chunk without decoding or re-encoding it. Any other message, or any message under
// another codec (a Frame is a proto message too, through the TunnelMessage it holds), is decoded
// as usual.
//
// A Frame holds pool buffers until Free, or until SendMsg hands them to gRPC; it is not safe for
// concurrent use.
type Frame struct {
	raw        mem.BufferSlice // a whole Data message as received; nil when msg holds the message
	at         sliceReader     // where raw's payload starts
	n          int             // raw's payload length
	closeWrite bool            // raw's close_write

	msg *managerv1.TunnelMessage
}

// NewFrame wraps a message to send as a Frame.
func NewFrame(m *managerv1.TunnelMessage) *Frame { return &Frame{msg: m} }

// IsData reports whether the frame carries Data.
func (f *Frame) IsData() bool { return f.raw != nil || f.msg.GetData() != nil }

// CloseWrite reports whether the frame is Data with close_write.
func (f *Frame) CloseWrite() bool {
	if f.raw != nil {
		return f.closeWrite
	}
	return f.msg.GetData().GetCloseWrite()
}

// Len is the length of the Data payload.
func (f *Frame) Len() int {
	if f.raw != nil {
		return f.n
	}
	return len(f.msg.GetData().GetPayload())
}

// Message is the frame as a TunnelMessage, decoding (and copying) a held Data message; for
// anything but Data, whose payload WriteTo moves without a copy.
func (f *Frame) Message() *managerv1.TunnelMessage {
	if f.raw != nil {
		m := new(managerv1.TunnelMessage)
		payload := make([]byte, f.n)
		r := f.at
		r.copyTo(payload)
		m.Msg = &managerv1.TunnelMessage_Data{Data: &managerv1.Data{Payload: payload, CloseWrite: f.closeWrite}}
		f.Free()
		f.msg = m
	}
	if f.msg == nil {
		f.msg = new(managerv1.TunnelMessage)
	}
	return f.msg
}

// WriteTo writes the Data payload to w: to a socket with one writev of the buffers it came in.
func (f *Frame) WriteTo(w io.Writer) (int64, error) {
	if f.raw == nil {
		n, err := w.Write(f.msg.GetData().GetPayload())
		return int64(n), err
	}
	var vec [8][]byte // a 64 KiB chunk arrives in 16 KiB HTTP/2 frames: 5 buffers or so
	bufs := net.Buffers(vec[:0])
	r := f.at
	for left := f.n; left > 0; {
		b := r.bufs[r.i].ReadOnlyData()[r.off:]
		b = b[:min(len(b), left)]
		bufs = append(bufs, b)
		left -= len(b)
		r.advance(len(b))
	}
	return bufs.WriteTo(w)
}

// Free gives the frame's buffers back; the frame is then empty. It may be called more than once.
func (f *Frame) Free() {
	if f.raw != nil {
		f.raw.Free()
	}
	*f = Frame{}
}

// ProtoReflect makes a Frame a proto message for codecs other than Codec, which then decode into
// and encode from the TunnelMessage it holds.
func (f *Frame) ProtoReflect() protoreflect.Message { return f.Message().ProtoReflect() }
