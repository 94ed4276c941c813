//go:build cgo

package pkcs11

/*
#cgo linux LDFLAGS: -ldl
#cgo darwin LDFLAGS: -ldl
#cgo freebsd LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// trousseau_pkcs11_load loads the library at path with every symbol
// resolved now, so that a missing dependency is reported when the plugin
// starts rather than at the first call, and checks that it is a PKCS#11
// module. It returns NULL, or what the loader said (to be freed). The
// library is left loaded: it stays so for the life of the process (see
// module), and some vendors' modules do not survive being unloaded.
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

// module is one PKCS#11 library, shared by every backend of the process
// that names it: C_Initialize and C_Finalize act on the whole library,
// so two backends on one module (two tokens of one HSM) must agree on
// when they are called. A module is loaded once and never unloaded.
type module struct {
	path string
	ctx  *pkcs11.Ctx

	// mu is held for reading by every call into the module, and for
	// writing by C_Initialize and C_Finalize: PKCS#11 leaves C_Finalize
	// undefined while other calls are in progress.
	mu          sync.RWMutex
	initialized bool
	// gen counts initialisations. Sessions and handles belong to one;
	// those of an earlier one are gone, and must not be closed: their
	// handle may be another session's now.
	gen       uint64
	lastReset time.Time

	// users counts the backends holding the module; it changes under
	// modules.mu. A module without users is not initialised again by a
	// call that outlived its backend.
	users atomic.Int32

	// logins are the tokens' login gates, by serial number and label
	// (see loginGate). They last as long as the module, which is never
	// unloaded: a token keeps its gate across resets of the module, and
	// a token initialised again (a new serial) gets a new one.
	loginsMu sync.Mutex
	logins   map[string]*loginGate
}

// modules are the modules loaded, by the library's real path.
var modules = struct {
	sync.Mutex
	byPath map[string]*module
}{byPath: map[string]*module{}}

// resetInterval is the least time between two resets of a module that
// are made to find a token that is missing: a token that stays missing
// must not have the sessions of the module's other tokens dropped at
// every call.
var resetInterval = 5 * time.Second

// releaseWait bounds how long releasing a module's last user waits for
// calls in progress (a module that does not return) before it leaves the
// module initialised.
const releaseWait = 5 * time.Second

// resetWait bounds how long a reset waits for the calls in progress
// (within its caller's deadline) before it gives up for this time.
const resetWait = 5 * time.Second

// openModule loads the module at path, or finds it loaded. Its errors
// say what is wrong with the file; the caller names the field.
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

// release gives the module up; its last user finalises it, so that a
// later one initialises it afresh.
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

// with runs fn with the module initialised, under the read lock, and
// passes it the initialisation's generation.
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

// generation is the module's current generation, 0 when it is not
// initialised.
func (m *module) generation() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.initialized {
		return 0
	}
	return m.gen
}

// ifCurrent runs fn, under the read lock, if the module is initialised
// and of generation gen; it never initialises the module.
func (m *module) ifCurrent(gen uint64, fn func()) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.initialized && m.gen == gen {
		fn()
	}
}

// tryIfCurrent is ifCurrent if the read lock can be had at once, and
// reports whether it could. It cannot while a writer (C_Initialize,
// C_Finalize) holds the lock, or waits for it: a new reader would wait
// behind that writer, which waits for the calls in progress, one of
// which may never return.
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

// reset finalises and initialises the module again, unless it has been
// since generation seen, or lately (see resetInterval). It reports
// whether the module is now of another generation than seen.
//
// It waits for the calls in progress, as C_Finalize must, within ctx and
// resetWait, and gives up after: a call that does not return must not
// hold the reset, nor (as a writer waiting for the lock would) every
// other call into the module, forever. It polls rather than wait on the
// lock for that reason.
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
