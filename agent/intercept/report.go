package intercept

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	managerv1 "teledock.dev/teledock/api/manager/v1"
	"teledock.dev/teledock/internal/flow"
)

// DefaultReportInterval is how often the agent tells the manager its intercepts' counters, while
// they change.
const DefaultReportInterval = 3 * time.Second

// CounterReporter sends counters to the manager; managerv1.ManagerClient is one.
type CounterReporter interface {
	ReportCounters(ctx context.Context, in *managerv1.AgentCounters, opts ...grpc.CallOption) (*managerv1.ReportCountersResponse, error)
}

// ReportConfig configures Reports.
type ReportConfig struct {
	Log      *slog.Logger
	Manager  CounterReporter
	Router   *Router
	Interval time.Duration // 0 means DefaultReportInterval
}

// Reports sends the Router's counters to the manager every Interval while they changed since the
// manager last took them (or the session changed), until ctx ends. A failed report is tried again
// at the next tick; the counters are totals, so nothing is lost meanwhile.
func Reports(ctx context.Context, cfg ReportConfig) error {
	switch {
	case cfg.Log == nil:
		return errors.New("intercept: reports: nil logger")
	case cfg.Manager == nil:
		return errors.New("intercept: reports: nil manager")
	case cfg.Router == nil:
		return errors.New("intercept: reports: nil router")
	}
	interval := cfg.Interval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	var last *managerv1.AgentCounters
	failures := 0
	for flow.Sleep(ctx, interval) {
		session, counters := cfg.Router.Counters()
		report := &managerv1.AgentCounters{SessionId: session, Intercepts: counters}
		if session == "" || len(counters) == 0 || proto.Equal(report, last) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		_, err := cfg.Manager.ReportCounters(rctx, report)
		cancel()
		if err != nil {
			failures++
			if failures == 1 {
				cfg.Log.Warn("cannot report the intercepts' request counters; retrying", "err", err)
			}
			continue
		}
		failures = 0
		last = report
	}
	return nil
}
