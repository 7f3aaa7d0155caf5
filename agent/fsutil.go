package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// stateDirMode keeps the state directory private: it holds the agent JWT and refresh secret.
const stateDirMode os.FileMode = 0o700

// stateFileMode is the mode of every file the agent writes into its state directory.
const stateFileMode os.FileMode = 0o600

// ensurePrivateDir creates dir (and parents) and makes sure only the owner can enter it, also
// when it already existed with looser permissions.
//
// A directory it creates is made durable in its parent (fsync), so that what is written into
// it and fsynced cannot vanish with the directory entry in a crash (an applied publish whose
// files are gone). A directory that exists costs a stat and a chmod.
func ensurePrivateDir(dir string) error {
	return ensureDir(dir, true)
}

// ensureDir is ensurePrivateDir; unless durable, the directories it creates are not fsynced in
// their parents (a publish's directory, whose files are all derived: a crash that loses it is
// found at start, see Agent.checkRendered).
func ensureDir(dir string, durable bool) error {
	_, err := makeDir(dir, durable)
	return err
}

// makeDir is ensureDir, and reports whether it created dir. The common case, a new directory
// in one that exists, is a mkdir and a chmod (the umask may have narrowed the mode).
func makeDir(dir string, durable bool) (bool, error) {
	if err := os.Mkdir(dir, stateDirMode); err == nil {
		if err := os.Chmod(dir, stateDirMode); err != nil {
			return true, fmt.Errorf("chmod %s: %w", dir, err)
		}
		if durable {
			syncDir(filepath.Dir(dir))
		}
		return true, nil
	}
	var created []string // the directories MkdirAll is about to create, deepest first
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); !os.IsNotExist(err) || filepath.Dir(d) == d {
			break
		}
		created = append(created, d)
	}
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, stateDirMode); err != nil {
		return false, fmt.Errorf("chmod %s: %w", dir, err)
	}
	if durable {
		for _, d := range created {
			syncDir(filepath.Dir(d))
		}
	}
	return len(created) > 0, nil
}

// syncDir fsyncs a directory, making its entries durable; a failure is not worth failing the
// write for (some filesystems refuse to fsync directories). Concurrent calls for one
// directory share their fsyncs (groupSync): the deploys that create their publishes'
// directories at once pay one fsync of the parent, not one each.
func syncDir(dir string) {
	_ = groupSync(dir, func() error {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	})
}

// fsyncGroups holds, for each path being synced, the state of its group commit; an entry
// lives only while a caller uses it.
var fsyncGroups = struct {
	sync.Mutex
	m map[string]*fsyncGroup
}{m: map[string]*fsyncGroup{}}

type fsyncGroup struct {
	users   int       // callers holding the entry
	cond    sync.Cond // on fsyncGroups' mutex: a sync ended
	running bool
	started uint64 // syncs started
	done    uint64 // syncs ended (they run one at a time, in order)
	failed  uint64 // the last sync that failed, 0 for none
	err     error  // its error
}

// groupSync makes durable what the caller wrote to path before the call, with do (an fsync of
// path): it waits for a sync of path that started after the call, running it itself when none
// is running. A sync already running may have started before the caller's write, so it does
// not count; the callers that arrive meanwhile then share the next one, which is group commit:
// N concurrent writers cost about two fsyncs, not N. A caller is told of a failure of its sync
// or of a later one (never of an earlier one), which errs on the side of reporting it.
func groupSync(path string, do func() error) error {
	fsyncGroups.Lock()
	defer fsyncGroups.Unlock()
	g := fsyncGroups.m[path]
	if g == nil {
		g = &fsyncGroup{}
		g.cond.L = &fsyncGroups.Mutex
		fsyncGroups.m[path] = g
	}
	g.users++
	want := g.started + 1
	for g.done < want {
		if g.running {
			g.cond.Wait()
			continue
		}
		g.running = true
		g.started++
		n := g.started
		fsyncGroups.Unlock()
		err := do()
		fsyncGroups.Lock()
		g.running, g.done = false, n
		if err != nil {
			g.failed, g.err = n, err
		}
		g.cond.Broadcast()
	}
	var err error
	if g.failed >= want {
		err = g.err
	}
	if g.users--; g.users == 0 {
		delete(fsyncGroups.m, path)
	}
	return err
}

// writeFileAtomic replaces path with data so that a reader (or a crash) sees either the old or
// the new content, never a torn file: write a temp file in the same directory, fsync it, rename
// it over path, fsync the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeFilesAtomic(filepath.Dir(path), mode, fileContent{name: filepath.Base(path), data: data})
}

// fileContent is one file of writeFilesAtomic.
type fileContent struct {
	name string
	data []byte
	// derived marks a file rebuilt or checked from other state after a crash (a publish's
	// rendered files, see Agent.checkRendered): it is not fsynced, and a call whose files are
	// all derived does not fsync the directory either.
	derived bool
}

// writeFilesAtomic replaces each file in dir as writeFileAtomic does, in order, with one fsync
// of the directory for all of them once every rename is done: after it, all the new contents
// are durable (a derived file's only as far as the filesystem wrote it). A crash before it may
// keep any of the old ones, never a torn file but for a derived one. A reader sees each file
// old or new, never torn, derived or not.
func writeFilesAtomic(dir string, mode os.FileMode, files ...fileContent) error {
	durable := false
	for _, f := range files {
		if err := replaceFile(dir, f, mode); err != nil {
			return err
		}
		durable = durable || !f.derived
	}
	// The renames are only durable once the directory entries are.
	if durable {
		syncDir(dir)
	}
	return nil
}

// replaceFile writes f to a temp file in dir, fsyncs it (unless derived) and renames it over
// f's name.
func replaceFile(dir string, f fileContent, mode os.FileMode) (err error) {
	path := filepath.Join(dir, f.name)
	tmp, err := os.CreateTemp(dir, "."+f.name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600 already.
	if mode != 0o600 {
		if err = tmp.Chmod(mode); err != nil {
			_ = tmp.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if _, err = tmp.Write(f.data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !f.derived {
		if err = tmp.Sync(); err != nil {
			_ = tmp.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
