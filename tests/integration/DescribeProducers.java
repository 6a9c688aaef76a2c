// The Java Admin's describeProducers against a cluster, for test_replication_edges.py: run
// as a single-file program (`java -cp 'KAFKA_LIBS/*' DescribeProducers.java BOOTSTRAP TOPIC
// [BROKER_ID|leader]...`). For each target it prints one line: `leader` or the broker id,
// then either `ok` and each producer as `id:epoch:lastSequence:lastTimestamp`, or `error`
// and the exception's class name.

import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeProducersOptions;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.common.TopicPartition;

public class DescribeProducers {
    public static void main(String[] args) throws Exception {
        TopicPartition tp = new TopicPartition(args[1], 0);
        for (int i = 2; i < args.length; i++) {
            // One Admin per target, so that each answer is that target's alone.
            try (Admin admin = Admin.create(Map.of(
                    AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0],
                    AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30000))) {
                DescribeProducersOptions options = new DescribeProducersOptions();
                if (!args[i].equals("leader")) {
                    options.brokerId(Integer.parseInt(args[i]));
                }
                StringBuilder line = new StringBuilder(args[i]);
                try {
                    List<ProducerState> active = admin.describeProducers(List.of(tp), options)
                            .partitionResult(tp).get(60, TimeUnit.SECONDS).activeProducers();
                    line.append(" ok");
                    for (ProducerState p : active) {
                        line.append(' ').append(p.producerId()).append(':').append(p.producerEpoch())
                                .append(':').append(p.lastSequence()).append(':').append(p.lastTimestamp());
                    }
                } catch (ExecutionException e) {
                    line.append(" error ").append(e.getCause().getClass().getSimpleName());
                }
                System.out.println(line);
            }
        }
    }
}
