//go:build soak

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/trousseau-io/trousseau/internal/soak"
)

// runLane injects a lane's faults one after another until ctx ends; a
// fault under way is always finished, so that everything is up at the end.
func (r *soakRig) runLane(ctx context.Context, faults []soak.Fault) {
	for _, f := range faults {
		if !sleepCtx(ctx, f.Gap) {
			return
		}
		r.logf("fault start: %s", f)
		switch f.Kind {
		case soak.CustodianStop, soak.CustodianKill, soak.QuorumLost:
			r.custodianFault(f)
		case soak.PluginKill:
			r.pluginKill(f)
		case soak.APIServerRestart:
			r.apiserverRestart(f)
		case soak.RotateSIGHUP, soak.RotateCommand:
			r.rotate(f)
		case soak.Migration:
			r.migrate(f)
		}
	}
	r.logf("lane %s: plan exhausted", faults[0].Lane)
}

// custodianFault takes its targets down for f.Hold and brings them back.
// A key file, which has no process, is moved away and back.
func (r *soakRig) custodianFault(f soak.Fault) {
	end := r.rec.FaultStarted(f.Kind, f.Targets, time.Now())
	kill := f.Kind == soak.CustodianKill
	for _, c := range f.Targets {
		r.custodianDown(c, kill)
	}
	time.Sleep(f.Hold)
	note := ""
	for _, c := range f.Targets {
		if err := r.custodianUp(c, kill); err != nil {
			note = err.Error()
			r.rec.Problem("%s: %s did not come back: %v", f, c, err)
		}
	}
	end(time.Now(), note)
	r.logf("fault end: %s", f)
}

func (r *soakRig) custodianDown(c string, kill bool) {
	switch {
	case c == soak.KeyFile:
		r.moveKeyFile(r.keyFile, r.keyFile+".away")
	case c == soak.Vault && kill:
		r.vault.p.kill()
	case c == soak.Vault:
		r.vault.p.signal(syscall.SIGSTOP)
	case kill:
		r.aws.Stop()
	default:
		r.aws.Signal(syscall.SIGSTOP)
	}
}

func (r *soakRig) custodianUp(c string, kill bool) error {
	switch {
	case c == soak.KeyFile:
		r.moveKeyFile(r.keyFile+".away", r.keyFile)
	case c == soak.Vault && kill:
		return r.vault.restart()
	case c == soak.Vault:
		r.vault.p.signal(syscall.SIGCONT)
	case kill:
		r.aws.Start()
	default:
		r.aws.Signal(syscall.SIGCONT)
	}
	return nil
}

func (r *soakRig) moveKeyFile(from, to string) {
	if err := os.Rename(from, to); err != nil {
		r.rec.Problem("key file: %v", err)
	}
}

// pluginKill is a crash of one node's plugin and its restart; the fault
// lasts until the new plugin is ready.
func (r *soakRig) pluginKill(f soak.Fault) {
	n := r.node(f.Targets[0])
	end := r.rec.FaultStarted(f.Kind, f.Targets, time.Now())
	// Held until ready: a SIGHUP before the plugin handles it would kill it.
	n.mu.Lock()
	n.c.plugin.signal(syscall.SIGKILL)
	<-n.c.plugin.done
	n.c.plugin = startProcEnv(r.t, n.c.dir, "trousseau", n.c.pluginEnv, trousseauBin, "serve", "--config", n.c.config)
	n.starts++
	note := ""
	if err := r.waitPluginReady(n, 5*time.Minute); err != nil {
		note = err.Error()
		r.rec.Problem("%s: restarted plugin not ready: %v", f, err)
	}
	n.mu.Unlock()
	end(time.Now(), note)
	r.logf("fault end: %s", f)
}

func (r *soakRig) waitPluginReady(n *soakNode, timeout time.Duration) error {
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		last = n.c.pluginGet(ctx, "/readyz", http.StatusOK)
		cancel()
		if last == nil {
			return nil
		}
	}
	return last
}

// apiserverRestart stops one node's kube-apiserver (SIGTERM) and starts a
// new one, which has no cached DEK seeds; the fault lasts until it is
// ready.
func (r *soakRig) apiserverRestart(f soak.Fault) {
	n := r.node(f.Targets[0])
	end := r.rec.FaultStarted(f.Kind, f.Targets, time.Now())
	n.c.apiserver.stop()
	n.c.startAPIServer(soakAPIServer) // only this lane touches c.apiserver and c.kube
	n.kube.Store(n.c.kube)
	end(time.Now(), "")
	r.logf("fault end: %s", f)
}

// rotate rotates the target node's DEK by SIGHUP or `trousseau rotate`,
// waits until that node has a new key_id (a rotation postponed while a
// backend is down happens once every backend answers), then until both
// nodes report it and write under it: the convergence the report keeps.
func (r *soakRig) rotate(f soak.Fault) {
	n := r.node(f.Targets[0])
	end := r.rec.FaultStarted(f.Kind, f.Targets, time.Now())
	before, err := r.keyIDWithin(n, 2*time.Minute)
	if err != nil {
		end(time.Now(), "no key_id")
		r.rec.Problem("%s: no key_id before the rotation: %v", f, err)
		return
	}
	starts := r.sendRotation(f, n)
	var rotated time.Time
	var now string
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		now, _ = r.keyIDWithin(n, 10*time.Second)
		if now != "" && now != before {
			rotated = time.Now()
			break
		}
		// A plugin killed before it rotated forgot the request.
		if n.mu.Lock(); n.starts != starts {
			n.mu.Unlock()
			r.logf("%s: the plugin restarted before rotating; asked again", f)
			starts = r.sendRotation(f, n)
			continue
		}
		n.mu.Unlock()
	}
	end(time.Now(), "")
	if rotated.IsZero() {
		r.rec.Problem("%s: %s still on %s 5m after the rotation was asked for", f, n.name, before)
		return
	}
	r.rec.Update(func(rep *soak.Report) { rep.Rotations++ })
	r.logf("%s rotated %s -> %s", n.name, before, now)
	r.converge(f, rotated, before)
}

// sendRotation asks n's plugin to rotate; it returns the plugin's start
// count it asked.
func (r *soakRig) sendRotation(f soak.Fault, n *soakNode) int {
	if f.Kind == soak.RotateSIGHUP {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.c.plugin.signal(syscall.SIGHUP)
		return n.starts
	}
	n.mu.Lock()
	starts := n.starts
	n.mu.Unlock()
	// Exit 0 is rotated, 1 postponed (the plugin rotates once every
	// backend answers); anything else did not reach the plugin.
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, trousseauBin, "rotate", "--config", n.c.config, "-o", "json").CombinedOutput()
		cancel()
		r.logf("trousseau rotate on %s: %v %s", n.name, err, bytes.Join(bytes.Fields(out), []byte(" ")))
		var ee *exec.ExitError
		if err == nil || errors.As(err, &ee) && ee.ExitCode() == 1 {
			break
		}
	}
	return starts
}

func (r *soakRig) keyIDWithin(n *soakNode, timeout time.Duration) (string, error) {
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		id, err := readyKeyID(ctx, n.c.pluginHC)
		cancel()
		if err == nil {
			return id, nil
		}
		last = err
	}
	return "", last
}

// converge waits until both plugins report one key_id other than old and
// a probe written through each node is stored under it.
func (r *soakRig) converge(f soak.Fault, since time.Time, old string) string {
	var plugins time.Duration
	for deadline := since.Add(soak.ConvergenceBound + 5*time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
		k1, err1 := r.keyIDWithin(r.nodes[0], 10*time.Second)
		k2, err2 := r.keyIDWithin(r.nodes[1], 10*time.Second)
		if err1 != nil || err2 != nil || k1 != k2 || k1 == old {
			continue
		}
		if plugins == 0 {
			plugins = time.Since(since)
		}
		if !r.probesStoredUnder(k1) {
			continue
		}
		took := time.Since(since)
		if f.Kind == finalCheck {
			return k1
		}
		r.rec.Update(func(rep *soak.Report) {
			rep.Convergences = append(rep.Convergences, soak.Convergence{Rotation: since.Sub(r.start).Seconds(), Plugins: plugins.Seconds(), Seconds: took.Seconds(), KeyID: k1})
		})
		r.logf("both plugins on %s %s after the rotation, writes through both nodes under it after %s", k1, plugins.Round(time.Second), took.Round(time.Second))
		if took > soak.ConvergenceBound {
			r.rec.Problem("%s: the nodes agreed after %s, over the %s bound", f, took.Round(time.Second), soak.ConvergenceBound)
		}
		return k1
	}
	r.rec.Problem("%s: the nodes did not agree on a new key_id within %s", f, soak.ConvergenceBound+5*time.Minute)
	return ""
}

// probesStoredUnder writes a probe Secret through each node and reports
// whether both are stored under keyID.
func (r *soakRig) probesStoredUnder(keyID string) bool {
	for _, n := range r.nodes {
		o := soak.Object{Resource: "secrets", Namespace: "soak-probe", Name: "probe-" + n.name}
		if !r.write(n, o, "probe") {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		resp, err := n.c.etcdCli.Get(ctx, fmt.Sprintf("/registry/secrets/%s/%s", o.Namespace, o.Name))
		cancel()
		if err != nil || len(resp.Kvs) != 1 {
			return false
		}
		if id, err := storedKeyIDOf(resp.Kvs[0].Value); err != nil || id != keyID {
			return false
		}
	}
	return true
}
