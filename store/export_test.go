package store

import "context"

// WriteDeliveriesUnchecked is WriteDeliveries without its reference check: the floor of
// BenchmarkWriteDeliveries, and with the foreign keys put back, the statement as it was.
func (s *Store) WriteDeliveriesUnchecked(ctx context.Context, recs []DeliveryRecord) error {
	return s.writeDeliveries(ctx, deliveryInsert+deliveryConflict, recs)
}
