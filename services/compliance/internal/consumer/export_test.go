package consumer

// Waiting returns how many partitions' events wait for the write under
// way.
func (c *Consumer) Waiting() int { return c.merged.Waiting() }

// PrepareWorkers is prepareWorkers.
var PrepareWorkers = prepareWorkers
