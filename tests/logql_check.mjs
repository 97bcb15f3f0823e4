// Parse LogQL queries with Loki's grammar as Grafana uses it (@grafana/lezer-logql).
// stdin: a JSON array of query strings; stdout: a JSON array of {query, error} (error null when it parses).
import { parser } from "@grafana/lezer-logql";

function firstError(query) {
  const tree = parser.parse(query);
  let error = null;
  tree.iterate({
    enter(node) {
      if (error === null && node.type.isError) {
        error = `syntax error at ${node.from}: ${JSON.stringify(query.slice(node.from, node.from + 20))}`;
      }
    },
  });
  return error;
}

let input = "";
process.stdin.setEncoding("utf8");
for await (const chunk of process.stdin) input += chunk;
const queries = JSON.parse(input);
process.stdout.write(JSON.stringify(queries.map((query) => ({ query, error: firstError(query) }))));
