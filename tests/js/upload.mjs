// Upload one file to a tus endpoint with tus-js-client and print the final upload's URL.
// Usage: node upload.mjs <endpoint> <file> [parallelUploads] [chunkSize]
// The API key comes from JETFLOW_API_KEY, sent as X-API-Key on every request.
import fs from 'node:fs'
import { Upload } from 'tus-js-client'

const [endpoint, path, parallel = '1', chunkSize] = process.argv.slice(2)
const options = {
  endpoint,
  parallelUploads: Number(parallel),
  metadata: { filename: path.split('/').pop(), file_type: 'application/octet-stream' },
  retryDelays: [],
  headers: { 'X-API-Key': process.env.JETFLOW_API_KEY ?? '' },
  onError: (error) => {
    console.error(`upload failed: ${error}`)
    process.exit(1)
  },
  onSuccess: () => console.log(upload.url),
}
if (chunkSize) options.chunkSize = Number(chunkSize)
const upload = new Upload(fs.createReadStream(path), options)
upload.start()
