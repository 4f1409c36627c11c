// kafkajs admin calls for test_reassignment.py: one JSON command line in argv[2],
// one JSON answer on stdout.
//   {"brokers": [...], "op": "alter", "topic": t, "moves": {"0": [1, 2]}}
//   {"brokers": [...], "op": "list"}
//   {"brokers": [...], "op": "metadata", "topic": t}
const { Kafka, logLevel } = require('kafkajs')

async function main () {
  const command = JSON.parse(process.argv[2])
  const admin = new Kafka({ clientId: 'tern-test', brokers: command.brokers, logLevel: logLevel.NOTHING }).admin()
  await admin.connect()
  try {
    if (command.op === 'alter') {
      const partitionAssignment = Object.entries(command.moves).map(([p, replicas]) => ({ partition: Number(p), replicas }))
      try {
        await admin.alterPartitionReassignments({ timeout: 30000, topics: [{ topic: command.topic, partitionAssignment }] })
        return { ok: true }
      } catch (e) {
        return { ok: false, name: e.name, type: e.type, errors: (e.errors || []).map(x => ({ partition: x.partition, type: x.type, code: x.code })) }
      }
    }
    if (command.op === 'list') {
      return await admin.listPartitionReassignments({})
    }
    if (command.op === 'metadata') {
      return await admin.fetchTopicMetadata({ topics: [command.topic] })
    }
    throw new Error(`unknown op ${command.op}`)
  } finally {
    await admin.disconnect()
  }
}

main().then(
  answer => { process.stdout.write(JSON.stringify(answer) + '\n') },
  error => { process.stderr.write(String(error.stack || error) + '\n'); process.exit(1) }
)
