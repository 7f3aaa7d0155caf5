package store

import (
	"context"

	"gorm.io/gorm"
)

// WithTx returns ctx carrying tx as InTx would, so Store methods called with it join a
// transaction that code still holding a *gorm.DB opened (the activities, until they move to
// InTx). The transaction stays the opener's to commit.
func WithTx(ctx context.Context, tx *gorm.DB) context.Context {
	return context.WithValue(ctx, txKey{}, tx)
}
