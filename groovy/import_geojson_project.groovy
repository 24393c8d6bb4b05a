/*
 * Import the GeoJSON that qpsam wrote for every image of a QuPath project, one file per image.
 *
 * Headless, for the whole project (-s saves each image's data after the script):
 *     QuPath script -p /path/to/project.qpproj -s import_geojson_project.groovy
 * In QuPath: open the project, open this script in Automate > Script editor and choose Run > Run for project
 * (the data of each image is saved); Run on its own imports into the open image only.
 *
 * Images without a file are skipped with a message.
 */

// ==== Values to fill in (qpsam writes them; edit by hand otherwise) ====
def geojsonFolder = 'qpsam/geojson'  // FILL IN: folder of the files; a relative path is read from the project's folder
def fileNamePattern = '{id}.geojson'  // FILL IN: file name per image; {id} = image entry id, {name} = image name
def removeBeforeImport = 'same-id'  // FILL IN: 'none', 'same-id' (objects with the file's ids are replaced in place) or 'all'
def nestObjects = false  // FILL IN: true nests the imported objects under the objects that contain them
// ==== End of values to fill in ====

def entry = getProjectEntry()
if (entry == null) {
    throw new IllegalStateException('No project entry: open a project, or run QuPath script with -p project.qpproj')
}
def folder = new File(geojsonFolder)
if (!folder.isAbsolute()) {
    folder = new File(buildFilePath(PROJECT_BASE_DIR, geojsonFolder))
}
def fileName = fileNamePattern.replace('{id}', entry.getID()).replace('{name}', entry.getImageName())
def file = new File(folder, fileName)
if (!file.isFile()) {
    println "qpsam: ${entry.getImageName()}: no ${file.getAbsolutePath()}, skipped"
    return
}

def hierarchy = getCurrentHierarchy()
def imported = qupath.lib.io.PathIO.readObjects(file.toPath())
int replaced = 0
switch (removeBeforeImport) {
    case 'all':
        hierarchy.clearAll()
        break
    case 'same-id':
        // As `qpsam import --replace` does: an object whose id is already in the image takes the old object's
        // place (same parent, same position among its siblings), and keeps the old object's children when it has
        // none of its own. So importing the same file twice replaces its objects instead of doubling them.
        def present = hierarchy.getAllObjects(false).collectEntries { [(it.getID()): it] }
        def added = []
        for (obj in imported) {
            def old = present[obj.getID()]
            if (old == null || old.getParent() == null) {
                added << obj
                continue
            }
            if (!obj.hasChildObjects() && old.hasChildObjects()) {
                def children = new ArrayList(old.getChildObjects())
                old.clearChildObjects()
                obj.addChildObjects(children)
            }
            def parent = old.getParent()
            def siblings = new ArrayList(parent.getChildObjects())
            siblings[siblings.indexOf(old)] = obj
            parent.clearChildObjects()
            parent.addChildObjects(siblings)
            replaced++
        }
        imported = added
        break
    case 'none':
        break
    default:
        throw new IllegalArgumentException("removeBeforeImport must be 'none', 'same-id' or 'all', not '${removeBeforeImport}'")
}

// Objects are added at the top level, as `qpsam import` adds them.
hierarchy.addObjects(imported)
if (nestObjects) {
    resolveHierarchy()
}
fireHierarchyUpdate()
println "qpsam: ${entry.getImageName()}: imported ${imported.size() + replaced} objects (${replaced} replaced) from ${file.getName()}"
