package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/tunnel"
)

const (
	roleInitiator = "initiator"
	roleAcceptor  = "acceptor"
)

// errFinished ends a pipe's context once both of its handlers have returned, which releases a
// reader still blocked on a queue.
var errFinished = errors.New("connection finished")

// end is one party of a paired connection.
type end struct {
	role   string
	stream Stream
	life   context.Context // the party's session
	// out holds what to send on stream. Only the other end's reader writes it, and closes it when
	// its direction is done. Data frames are relayed in the buffers they were received in.
	out chan *tunnel.Frame
	// readDone is closed when this end's reader has finished cleanly: the party sent close_write or
	// ended its sending side.
	readDone chan struct{}
}

// endError is a failure of one end; the other end sees it as ErrPeer.
type endError struct {
	role string
	err  error
}

func (e *endError) Error() string { return e.role + ": " + e.err.Error() }
func (e *endError) Unwrap() error { return e.err }

// pipe copies between an initiator and an acceptor. Each end's gRPC handler runs send for its own
// stream (so that only the handler's goroutine ever sends on it), and a reader goroutine per end
// receives and queues for the other end.
//
// A connection ends:
//   - cleanly when both directions are done: each party sent Data{close_write} or ended its
//     sending side (CloseSend; forwarded to the other party as close_write). Each handler returns
//     once its own stream has nothing left to send or receive, and the stream ends with OK;
//   - cleanly when the acceptor answers the Dial with a failed DialResult (or ends its stream
//     before answering, which becomes one): the initiator gets it and both streams end;
//   - with an error when either stream fails or is cancelled, either party's session ends, or a
//     party breaks the protocol: that party's handler returns the error and the other one an error
//     wrapping ErrPeer.
//
// A reader blocked in Recv after its handler returned is released by gRPC, which cancels a
// stream when its handler returns.
type pipe struct {
	initiator, acceptor *end
	log                 *slog.Logger

	ctx  context.Context // ends on failure (cause: *endError) or after both handlers returned
	stop context.CancelCauseFunc
	// refused is closed when the acceptor refused the dial; only the acceptor's reader closes it.
	refused chan struct{}
	running atomic.Int32 // handlers that have not returned
}

func newPipe(initiator, acceptor *end, log *slog.Logger) *pipe {
	for _, e := range []*end{initiator, acceptor} {
		e.out = make(chan *tunnel.Frame, queueLen)
		e.readDone = make(chan struct{})
	}
	ctx, stop := context.WithCancelCause(context.Background())
	p := &pipe{initiator: initiator, acceptor: acceptor, log: log, ctx: ctx, stop: stop, refused: make(chan struct{})}
	p.running.Store(2)
	return p
}

func (p *pipe) peer(e *end) *end {
	if e == p.initiator {
		return p.acceptor
	}
	return p.initiator
}

// run serves one end until the connection ends (see pipe).
func (p *pipe) run(e *end) error {
	defer func() {
		if p.running.Add(-1) == 0 {
			p.stop(errFinished)
		}
	}()
	go p.read(e, p.peer(e))
	err := p.send(e)
	p.log.Debug("paired connection end done", "role", e.role, "error", err)
	return err
}

func (p *pipe) isRefused() bool {
	select {
	case <-p.refused:
		return true
	default:
		return false
	}
}

// send sends what the other end queued until this end is done both ways.
func (p *pipe) send(e *end) error {
	out, readDone, refused := e.out, e.readDone, p.refused
	for out != nil || readDone != nil {
		select {
		case f, ok := <-out:
			if !ok {
				out = nil
				continue
			}
			err := e.stream.SendMsg(f)
			f.Free() // what SendMsg did not hand to gRPC
			if err != nil {
				return p.fail(e, fmt.Errorf("send: %w", err))
			}
		case <-readDone:
			readDone = nil
		case <-refused:
			refused = nil
			if e == p.acceptor {
				return nil // it refused the dial: nothing more goes to it
			}
			// The initiator still gets the refusal, queued before out is closed, and then it is
			// done; it will not be sending.
			readDone = nil
		case <-p.ctx.Done():
			return p.errFor(e)
		case <-e.stream.Context().Done():
			if done(out, readDone) {
				return nil // it went away once it had all it was owed: not a failure
			}
			return p.fail(e, context.Cause(e.stream.Context()))
		case <-e.life.Done():
			if done(out, readDone) {
				return nil
			}
			return p.fail(e, context.Cause(e.life))
		}
	}
	return nil
}

// done reports, without blocking, whether an end has nothing left to send (out closed and
// empty) or to receive (readDone closed). An end may cancel its stream as soon as it has seen
// both halves closed, and the select that notices may not have looked at out and readDone yet.
func done(out <-chan *tunnel.Frame, readDone <-chan struct{}) bool {
	if out != nil {
		select {
		case f, ok := <-out:
			if ok {
				f.Free()
				return false // a message it will never get (taking it loses nothing)
			}
		default:
			return false
		}
	}
	if readDone != nil {
		select {
		case <-readDone:
		default:
			return false
		}
	}
	return true
}

// fail ends the connection because of end e, and returns e's own error.
func (p *pipe) fail(e *end, err error) error {
	ee := &endError{role: e.role, err: err}
	p.stop(ee)
	return p.errFor(e)
}

// errFor is what end e's handler returns once the connection failed.
func (p *pipe) errFor(e *end) error {
	cause := context.Cause(p.ctx)
	if p.isRefused() || errors.Is(cause, errFinished) {
		return nil
	}
	var ee *endError
	if errors.As(cause, &ee) && ee.role == e.role {
		return ee
	}
	return fmt.Errorf("%w: %v", ErrPeer, cause)
}

// read receives from one end and queues for the other until this direction is done.
func (p *pipe) read(from, to *end) {
	// The acceptor's first message must be its answer to the Dial; the initiator's Dial was read
	// before pairing.
	answered := from == p.initiator
	for {
		// A fresh frame each time: the last one is queued for the other end.
		f := new(tunnel.Frame)
		err := from.stream.RecvMsg(f)
		if errors.Is(err, io.EOF) {
			if !answered {
				p.refuse(from, to, dialResult("the acceptor ended its stream without answering the dial"))
				return
			}
			// CloseSend without close_write: that party is done writing all the same.
			if p.forward(to, closeWrite()) {
				close(to.out)
				close(from.readDone)
			}
			return
		}
		if err != nil {
			if !p.isRefused() {
				p.stop(&endError{role: from.role, err: fmt.Errorf("receive: %w", err)})
			}
			return
		}
		if f.IsData() {
			if !answered {
				f.Free()
				p.protocolError(from, "data before the dial result")
				return
			}
			cw := f.CloseWrite() // f belongs to the other end once queued
			if !p.forward(to, f) {
				return
			}
			if cw {
				close(to.out)
				close(from.readDone)
				return
			}
			continue
		}
		switch msg := f.Message().GetMsg().(type) {
		case *managerv1.TunnelMessage_DialResult:
			if answered {
				p.protocolError(from, "unexpected dial result")
				return
			}
			answered = true
			if !msg.DialResult.GetOk() {
				p.refuse(from, to, f)
				return
			}
			if !p.forward(to, f) {
				return
			}
		default:
			p.protocolError(from, fmt.Sprintf("unexpected %T", msg))
			return
		}
	}
}

// refuse passes the acceptor's failed DialResult to the initiator and ends the connection.
func (p *pipe) refuse(acceptor, initiator *end, res *tunnel.Frame) {
	if !p.forward(initiator, res) {
		return
	}
	close(initiator.out)
	close(p.refused)
	close(acceptor.readDone)
}

func (p *pipe) protocolError(e *end, what string) {
	p.stop(&endError{role: e.role, err: fmt.Errorf("%s: %w", what, ErrProtocol)})
}

// forward queues f for the other end, which owns it from then on; if the connection ended
// instead, f is freed.
func (p *pipe) forward(to *end, f *tunnel.Frame) bool {
	select {
	case to.out <- f:
		return true
	case <-p.ctx.Done():
		f.Free()
		return false
	}
}

func closeWrite() *tunnel.Frame {
	return tunnel.NewFrame(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_Data{Data: &managerv1.Data{CloseWrite: true}}})
}

func dialResult(msg string) *tunnel.Frame {
	res := &managerv1.DialResult{Error: msg, Reason: managerv1.DialError_DIAL_ERROR_UNSPECIFIED}
	return tunnel.NewFrame(&managerv1.TunnelMessage{Msg: &managerv1.TunnelMessage_DialResult{DialResult: res}})
}
