package checkpoint

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Topic is where the checkpoints are published: key the account, value
// the signed note with the cosignatures collected when it was published.
const Topic = "rcm.compliance-checkpoints.v1"

// Publisher returns the PublishFunc that produces to topic with cl.
func Publisher(cl *kgo.Client, topic string) PublishFunc {
	return func(ctx context.Context, account string, text []byte) error {
		rec := &kgo.Record{
			Topic: topic, Key: []byte(account), Value: text,
			Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte("text/plain")}},
		}
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			return fmt.Errorf("publish checkpoint of %s: %w", account, err)
		}
		return nil
	}
}
