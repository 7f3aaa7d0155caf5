package agent

import (
	"fmt"
	"os"
	"path/filepath"
)

// stateDirMode keeps the state directory private: it holds the agent JWT and refresh secret.
const stateDirMode os.FileMode = 0o700

// stateFileMode is the mode of every file the agent writes into its state directory.
const stateFileMode os.FileMode = 0o600

// ensurePrivateDir creates dir (and parents) and makes sure only the owner can enter it, also
// when it already existed with looser permissions.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, stateDirMode); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, stateDirMode); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic replaces path with data so that a reader (or a crash) sees either the old or
// the new content, never a torn file: write a temp file in the same directory, fsync it, rename
// it over path, fsync the directory.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	// The rename is only durable once the directory entry is; a failure here is not worth
	// failing the write for (some filesystems refuse to fsync directories).
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
