//go:build cgo

package pkcs11

/*
#cgo linux LDFLAGS: -ldl
#cgo darwin LDFLAGS: -ldl
#cgo freebsd LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// trousseau_pkcs11_load loads path with RTLD_NOW, so a missing dependency
// shows at start, not at the first call, and checks it is a PKCS#11
// module. It returns NULL or the loader's message (to be freed). The
// library is never unloaded: some vendors' modules do not survive it.
static char *trousseau_pkcs11_load(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		return strdup(e != NULL ? e : "dlopen failed");
	}
	if (dlsym(h, "C_GetFunctionList") == NULL) {
		dlclose(h);
		return strdup("it has no C_GetFunctionList: not a PKCS#11 module");
	}
	return NULL;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/miekg/pkcs11"

	"github.com/trousseau-io/trousseau/kmsclients"
)

// module is one PKCS#11 library, shared by the process's backends on it:
// C_Initialize and C_Finalize act on the whole library.
type module struct {
	path string
	ctx  *pkcs11.Ctx

	// mu is read-held by every call and write-held by C_Initialize and
	// C_Finalize: PKCS#11 leaves C_Finalize undefined during other calls.
	mu          sync.RWMutex
	initialized bool
	// gen counts initialisations; handles of an earlier one must not be
	// closed, as they may be another session's now.
	gen       uint64
	lastReset time.Time

	// users counts backends holding the module (changed under
	// modules.mu); a call outliving the last does not initialise it again.
	users atomic.Int32

	// logins are the [loginGate]s by serial and label; they survive
	// resets, and a re-initialised token (new serial) gets a new one.
	loginsMu sync.Mutex
	logins   map[string]*loginGate
}

// modules are the modules loaded, by the library's real path.
var modules = struct {
	sync.Mutex
	byPath map[string]*module
}{byPath: map[string]*module{}}

// resetInterval spaces resets looking for a missing token, so one that
// stays missing does not drop the module's other tokens' sessions on
// every call.
var resetInterval = 5 * time.Second

// releaseWait bounds how long the last release waits for hung calls
// before leaving the module initialised.
const releaseWait = 5 * time.Second

// resetWait bounds how long a reset waits for calls in progress.
const resetWait = 5 * time.Second

// openModule loads the module at path, or finds it loaded; the caller
// names the field in errors.
func openModule(path string) (*module, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, unwrapPathError(err)
	}
	modules.Lock()
	defer modules.Unlock()
	if m, ok := modules.byPath[real]; ok {
		m.users.Add(1)
		return m, nil
	}
	cpath := C.CString(real)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.trousseau_pkcs11_load(cpath); msg != nil {
		defer C.free(unsafe.Pointer(msg))
		return nil, fmt.Errorf("cannot load %s: %s", path, C.GoString(msg))
	}
	ctx := pkcs11.New(real)
	if ctx == nil {
		return nil, fmt.Errorf("cannot load %s as a PKCS#11 module", path)
	}
	m := &module{path: real, ctx: ctx}
	m.users.Store(1)
	modules.byPath[real] = m
	return m, nil
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// release gives the module up; the last user finalises it.
func (m *module) release() {
	modules.Lock()
	defer modules.Unlock()
	if m.users.Add(-1) > 0 {
		return
	}
	deadline := time.Now().Add(releaseWait)
	for !m.mu.TryLock() {
		if time.Now().After(deadline) {
			return // a call does not return: leave the module as it is
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer m.mu.Unlock()
	if m.initialized {
		m.ctx.Finalize()
		m.initialized = false
		m.gen++
	}
	m.lastReset = time.Time{}
}

// with runs fn under the read lock with the module initialised, passing
// the generation.
func (m *module) with(fn func(gen uint64) error) error {
	for {
		m.mu.RLock()
		if m.initialized {
			defer m.mu.RUnlock()
			return fn(m.gen)
		}
		m.mu.RUnlock()
		m.mu.Lock()
		err := m.initLocked()
		m.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// errReleased: a call that outlived the last backend on the module.
var errReleased = withKind(kmsclients.ErrUnavailable, "backend closed")

// generation is the current generation, 0 when not initialised.
func (m *module) generation() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.initialized {
		return 0
	}
	return m.gen
}

// ifCurrent runs fn under the read lock if the module is initialised at
// generation gen; it never initialises it.
func (m *module) ifCurrent(gen uint64, fn func()) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.initialized && m.gen == gen {
		fn()
	}
}

// tryIfCurrent is ifCurrent without waiting, reporting whether it ran: a
// reader would queue behind a waiting writer, which waits on calls that
// may never return.
func (m *module) tryIfCurrent(gen uint64, fn func()) bool {
	if !m.mu.TryRLock() {
		return false
	}
	defer m.mu.RUnlock()
	if m.initialized && m.gen == gen {
		fn()
	}
	return true
}

func (m *module) initLocked() error {
	if m.initialized {
		return nil
	}
	if m.users.Load() == 0 {
		return errReleased
	}
	err := m.ctx.Initialize()
	var code pkcs11.Error
	if errors.As(err, &code) && code == pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
		err = nil // by another library of this process; it is usable
	}
	if err != nil {
		return called("C_Initialize", err)
	}
	m.initialized = true
	m.gen++
	return nil
}

// reset re-initialises the module unless done since generation seen or
// within resetInterval, reporting whether the generation moved. It polls
// for the lock within ctx and resetWait rather than wait: a hung call
// must not block the reset, nor (through a waiting writer) every call.
func (m *module) reset(ctx context.Context, seen uint64) (bool, error) {
	deadline := time.Now().Add(resetWait)
	for !m.mu.TryLock() {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false, withKind(kmsclients.ErrUnavailable, "calls into the module still in progress: not initialising it again this time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer m.mu.Unlock()
	if m.gen != seen {
		return true, nil
	}
	if !m.lastReset.IsZero() && time.Since(m.lastReset) < resetInterval {
		return false, nil
	}
	m.lastReset = time.Now()
	if m.initialized {
		m.ctx.Finalize() // whatever it says, initialise again
		m.initialized = false
		m.gen++
	}
	return true, m.initLocked()
}
